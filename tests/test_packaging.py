"""What each distribution ships: `sagakit`'s wheel holds the library alone, the shop's
holds the shop, and the shop's and the bench's commands join `sagakit` through the
`sagakit.commands` entry points, which a plain `pip install sagakit` does not have."""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from importlib.metadata import EntryPoint, EntryPoints
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sagakit.cli.app import COMMANDS_GROUP, app, installed_commands, load_commands

ROOT = Path(__file__).resolve().parents[1]
SAGAKIT = Path(sys.executable).parent / "sagakit"
#: The module (``sagakit.cli.app`` as an attribute is the typer app).
cli = importlib.import_module("sagakit.cli.app")

SHOP_COMMANDS = {"demo", "up", "service", "verify", "order", "lab", "chaos"}
OPERATOR_COMMANDS = {"migrate", "list", "show", "retry", "dlq", "rules", "run", "broker"}


def build_wheel(project: Path, out: Path) -> zipfile.ZipFile:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(project),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def help_listing(text: str) -> set[str]:
    """The command names in a ``--help`` page's box."""
    return {line.split()[1] for line in text.splitlines() if line.startswith("│ ")}


def entry_points_txt(wheel: zipfile.ZipFile) -> str:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    return wheel.read(name).decode()


def test_the_sagakit_wheel_holds_the_library_and_nothing_else(tmp_path: Path) -> None:
    wheel = build_wheel(ROOT, tmp_path)
    names = wheel.namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"sagakit", "sagakit-0.1.0.dist-info"}, sorted(tops)
    assert {"sagakit/__init__.py", "sagakit/py.typed", "sagakit/cli/app.py"} <= set(names)
    # The dashboard's build is ignored by git and must still ship (`make setup` builds it).
    built = sorted(
        f"sagakit/{path.relative_to(ROOT / 'src' / 'sagakit').as_posix()}"
        for path in (ROOT / "src" / "sagakit" / "api" / "static").rglob("*")
        if path.is_file()
    )
    assert "sagakit/api/static/index.html" in built
    assert set(built) <= set(names)
    points = entry_points_txt(wheel)
    assert "sagakit = sagakit.cli:main" in points
    assert COMMANDS_GROUP not in points  # the operator commands only


def test_the_shop_wheel_holds_the_shop_and_adds_its_commands(tmp_path: Path) -> None:
    wheel = build_wheel(ROOT / "shop", tmp_path)
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert tops == {"sagakit_shop", "sagakit_shop-0.1.0.dist-info"}, sorted(tops)
    assert "sagakit_shop/rules/order.toml" in wheel.namelist()  # read at run time
    points = entry_points_txt(wheel)
    assert f"[{COMMANDS_GROUP}]" in points
    assert "shop = sagakit_shop.cli:app" in points


def test_the_bench_is_never_uploaded() -> None:
    project = tomllib.loads((ROOT / "bench" / "pyproject.toml").read_text())["project"]
    assert "Private :: Do Not Upload" in project["classifiers"]  # an index refuses it


def test_the_installed_shop_and_bench_commands_join_sagakit() -> None:
    done = subprocess.run(
        [str(SAGAKIT), "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
        check=True,
    )
    listed = help_listing(done.stdout)
    assert SHOP_COMMANDS | {"bench"} | OPERATOR_COMMANDS <= listed
    assert done.stderr == ""


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[EntryPoint]]:
    """The entries the CLI finds in the group: none until a test adds some."""
    found: list[EntryPoint] = []

    def entry_points(*, group: str) -> EntryPoints:
        assert group == COMMANDS_GROUP
        return EntryPoints(found)

    monkeypatch.setattr(cli, "entry_points", entry_points)
    installed_commands.cache_clear()
    yield found
    installed_commands.cache_clear()


def test_without_the_shop_sagakit_has_its_operator_commands(installed: list[EntryPoint]) -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    listed = help_listing(shown.stdout)
    assert listed >= OPERATOR_COMMANDS
    assert not (SHOP_COMMANDS | {"bench"}) & listed
    missing = runner.invoke(app, ["demo"])
    assert missing.exit_code == 2
    assert "No such command 'demo'" in missing.stderr


def test_a_part_that_fails_to_load_is_one_line_and_hides_nothing_else(
    installed: list[EntryPoint], capsys: pytest.CaptureFixture[str]
) -> None:
    installed += [
        EntryPoint(name="broken", value="no_such_part.cli:app", group=COMMANDS_GROUP),
        EntryPoint(name="shop", value="sagakit_shop.cli:app", group=COMMANDS_GROUP),
    ]
    shown = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    listed = help_listing(shown.stdout)
    assert OPERATOR_COMMANDS | {"demo", "up", "verify"} <= listed
    said = capsys.readouterr().err.strip().splitlines()
    assert said == [
        "error: skipped the 'broken' commands (no_such_part.cli:app): "
        "ModuleNotFoundError: No module named 'no_such_part'"
    ]


def test_an_entry_that_is_not_a_typer_app_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    entry = EntryPoint(name="odd", value="sagakit:__version__", group=COMMANDS_GROUP)
    assert load_commands([entry]) == {}
    assert "skipped the 'odd' commands (sagakit:__version__): a str, not a typer.Typer" in (
        capsys.readouterr().err
    )


def test_a_part_cannot_take_over_an_operator_command(installed: list[EntryPoint]) -> None:
    installed.append(
        EntryPoint(name="mine", value="tests.test_packaging:rogue", group=COMMANDS_GROUP)
    )
    done = CliRunner().invoke(app, ["migrate", "--help"])
    assert done.exit_code == 0
    assert "Create or upgrade sagakit's tables" in done.stdout


#: A part that names a command as one of sagakit's own.
rogue = typer.Typer()


@rogue.command("migrate")
def _rogue() -> None:
    """Not sagakit's migrate."""


# ---------------------------------------------------------------------------- public API

REFERENCE = ROOT / "docs" / "reference.md"


def documented() -> dict[str, set[str]]:
    """The names docs/reference.md gives, by module: ``sagakit``'s ``__all__``, each row
    of "Modules beyond `sagakit`" and the test kit's table."""
    import sagakit

    text = REFERENCE.read_text()
    names: dict[str, set[str]] = {"sagakit": set(sagakit.__all__)}
    beyond = text[text.index("### Modules beyond `sagakit`") : text.index("### The test kit")]
    for module, rest in re.findall(r"^\| `(sagakit[\w.]*)` \| (.*) \|$", beyond, re.M):
        names.setdefault(module, set()).update(re.findall(r"`(\w+)", rest))
    kit = text[text.index("### The test kit") : text.index("### Extras")]
    names.setdefault("sagakit.testing", set()).update(re.findall(r"^\| `(\w+)", kit, re.M))
    return names


def imported_from_sagakit(root: Path) -> Iterator[tuple[str, str]]:
    """("module.name", file) for each name the code under ``root`` imports from sagakit."""
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sagakit":
                for alias in node.names:
                    yield f"{node.module}.{alias.name}", str(path.relative_to(ROOT))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "sagakit":
                        yield alias.name, str(path.relative_to(ROOT))


def test_the_shop_and_the_bench_use_sagakit_public_api() -> None:
    public = documented()
    used: dict[str, set[str]] = {}
    for root in (ROOT / "shop" / "src", ROOT / "bench" / "src"):
        for name, where in imported_from_sagakit(root):
            used.setdefault(name, set()).add(where)

    def is_public(name: str) -> bool:
        module, _, attr = name.rpartition(".")
        # `from sagakit import tracing` names a documented module
        return attr in public.get(module, set()) or name in public

    inside = {name: sorted(files) for name, files in used.items() if not is_public(name)}
    assert not inside, f"the shop or the bench imports sagakit's insides: {inside}"
