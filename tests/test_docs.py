"""Docs that run: every Python block of the README and docs/ executes, top to bottom.

The README's tour and the tutorial are programs: their blocks, in one file, run as a
script (``asyncio.run(main())``) in a fresh interpreter, twice on the same files, and
must leave nothing open. The blocks of any other page share a namespace and may use
top-level ``await``, so a page reads as one program; a ```` ```text printed ```` block
after one is what it prints, checked line for line (``...`` for any lines). Shell lines
starting with ``sagakit`` run too, unless they hold a ``<placeholder>``.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)
#: Pages whose Python blocks, in one file, are a script a reader runs with ``python``.
SCRIPTS = {"README.md", "tutorial.md"}


def blocks(page: Path, language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(page.read_text()) if lang == language]


def run_as_script(page: Path, directory: Path) -> None:
    """The page's Python blocks as one file, run twice in ``directory``: the second run
    meets the files the first left. A SQLite store closed by the program removes its
    write-ahead log as it goes; one left open leaves ``*.db-wal`` behind."""
    script = directory / f"{page.stem}.py"
    script.write_text("\n".join(blocks(page, "python")))
    for run in (1, 2):
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"{page.name}, run {run}:\n{done.stderr}"
        left_open = sorted(p.name for p in directory.rglob("*.db-wal"))
        assert not left_open, f"{page.name}, run {run}: stores left open: {left_open}"


def programs(page: Path) -> list[tuple[str, str | None]]:
    """Each Python block, with the output a ```` ```text printed ```` block right after
    it says the block prints (None when the page does not say)."""
    found: list[tuple[str, str | None]] = []
    for lang, info, body in FENCE.findall(page.read_text()):
        if lang == "python":
            found.append((body, None))
        elif (lang, info.strip()) == ("text", "printed") and found:
            found[-1] = (found[-1][0], body)
    return found


def matches(printed: list[str], expected: list[str]) -> bool:
    """Line for line, where an expected ``...`` stands for any number of lines."""
    if not expected:
        return not printed
    if expected[0] == "...":
        return any(matches(printed[i:], expected[1:]) for i in range(len(printed) + 1))
    return bool(printed) and printed[0] == expected[0] and matches(printed[1:], expected[1:])


async def run_in_one_namespace(page: Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for number, (source, expected) in enumerate(programs(page), start=1):
        code = compile(
            source, f"{page.name}[{number}]", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            result = eval(code, namespace)
            if inspect.isawaitable(result):
                await result
        if expected is not None:
            printed = [line.rstrip() for line in out.getvalue().splitlines()]
            assert matches(printed, expected.splitlines()), (
                f"{page.name}[{number}] printed:\n{out.getvalue()}\nthe page says:\n{expected}"
            )


@pytest.mark.timeout(300)  # a page may run a dozen CLI commands, each a fresh process
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
async def test_page_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if page.name in SCRIPTS:
        run_as_script(page, tmp_path)
    else:
        await run_in_one_namespace(page)
    sagakit = Path(sys.executable).parent / "sagakit"
    for source in blocks(page, "bash"):
        for line in source.splitlines():
            command = line.split("#", 1)[0].strip()
            if not command.startswith("sagakit ") or "<" in command:
                continue
            done = subprocess.run(  # noqa: ASYNC221 - a short CLI call in a doc test
                [str(sagakit), *shlex.split(command)[1:]],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "COLUMNS": "200"},
                check=False,
            )
            assert done.returncode == 0, f"{page.name}: `{command}` failed:\n{done.stderr}"
