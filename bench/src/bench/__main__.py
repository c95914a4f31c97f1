"""``python -m bench``: the same command as ``sagakit bench``."""

from __future__ import annotations

import typer

from bench.cli import bench


def main() -> None:
    typer.run(bench)


if __name__ == "__main__":
    main()
