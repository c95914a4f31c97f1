"""The ``sagakit`` command line."""

from __future__ import annotations

from sagakit.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
