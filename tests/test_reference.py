"""The reference cannot fall behind: every command, option, environment variable and
public name that exists is described in docs/reference.md, and nothing it describes as a
command is gone."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

import sagakit
from sagakit.cli.app import app

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference.md"
HEADING = re.compile(r"^(#{2,6}) `sagakit ([a-z][a-z -]*)`\s*$", re.M)


def commands(group: Any = None, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """Every runnable command as ("dlq list", click command), subcommands included."""
    group = group if group is not None else typer.main.get_command(app)
    for name, command in sorted(group.commands.items()):
        if getattr(command, "hidden", False):
            continue
        if hasattr(command, "commands"):
            yield from commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


def sections() -> dict[str, str]:
    """The text under each "`sagakit CMD`" heading, down to the next heading of its level
    or above."""
    text = REFERENCE.read_text()
    found = list(HEADING.finditer(text))
    out: dict[str, str] = {}
    for match in found:
        level = len(match.group(1))
        end = len(text)
        for later in re.finditer(r"^(#{1,6}) ", text[match.end() :], re.M):
            if len(later.group(1)) <= level:
                end = match.end() + later.start()
                break
        out[match.group(2).strip()] = text[match.end() : end]
    return out


def test_every_command_has_a_section() -> None:
    documented = set(sections())
    existing = {name for name, _ in commands()}
    missing = sorted(existing - documented)
    assert not missing, f"docs/reference.md has no '#### `sagakit CMD`' section for: {missing}"
    gone = sorted(documented - existing)
    assert not gone, f"docs/reference.md describes commands that do not exist: {gone}"


def _shared(text: str, command: str) -> str:
    """The acting commands share one options table in the text above their sections."""
    whole = REFERENCE.read_text()
    if command in {"retry", "compensate", "resolve", "approve", "reject"}:
        start = whole.index("### Acting on sagas")
        return whole[start : whole.index("#### `sagakit retry`")] + text
    return text


@pytest.mark.parametrize("name", [name for name, _ in commands()])
def test_every_option_and_argument_is_described(name: str) -> None:
    command = dict(commands())[name]
    text = _shared(sections().get(name, ""), name)
    for param in command.params:
        if type(param).__name__.endswith("Option"):
            longest = max(param.opts, key=len)
            assert re.search(rf"`{re.escape(longest)}[`/,]", text), (
                f"`sagakit {name}`: option {longest} is not in its section of docs/reference.md"
            )
        else:
            assert param.name.upper() in text, (
                f"`sagakit {name}`: argument {param.name.upper()} is not in its section"
            )


def test_every_environment_variable_of_the_cli_is_listed() -> None:
    text = REFERENCE.read_text()
    env_section = text[text.index("## Environment variables") : text.index("## Store URLs")]
    variables = {
        var
        for _, command in commands()
        for param in command.params
        for var in ([param.envvar] if isinstance(param.envvar, str) else param.envvar or [])
    }
    assert variables, "the CLI reads no environment variables? the walk is broken"
    missing = sorted(v for v in variables if f"`{v}`" not in env_section)
    assert not missing, f"docs/reference.md's environment table lacks {missing}"


def test_every_public_name_is_described() -> None:
    text = REFERENCE.read_text()
    api = text[text.index("## Python API") :]
    missing = [name for name in sagakit.__all__ if not re.search(rf"`{re.escape(name)}[`(]", api)]
    assert not missing, f"docs/reference.md's Python API does not describe {missing}"


@pytest.mark.parametrize("name", sorted(sagakit._MOVED))
def test_a_name_that_left_the_top_level_says_where_it_went(name: str) -> None:
    module = importlib.import_module(sagakit._MOVED[name])
    assert hasattr(module, name)
    with pytest.raises(ImportError, match=rf"from {re.escape(module.__name__)} import {name}"):
        exec(f"from sagakit import {name}", {})  # the import users write


@pytest.mark.parametrize("old", sorted(sagakit._MOVED_MODULES))
def test_a_module_that_moved_says_where_it_went(old: str) -> None:
    new = sagakit._MOVED_MODULES[old]
    for module in new:
        importlib.import_module(module)  # each new home is real
    says = re.escape(" or ".join(new))
    with pytest.raises(ImportError, match=rf"{re.escape(old)} has moved: use {says}"):
        importlib.import_module(old)
    with pytest.raises(ImportError, match=rf"{re.escape(old)} has moved"):
        exec(f"from {old} import anything", {})  # the import users write
    with pytest.raises(ImportError, match=rf"{re.escape(old)} has moved"):
        exec(f"from sagakit import {old.rpartition('.')[2]}", {})


#: Loggers people filter and configure by name (each JSON log line carries it): their
#: modules moved into the layers' folders, the names stayed.
LOGGERS = {
    "sagakit.engine.orchestrator": "sagakit.orchestrator",
    "sagakit.engine.choreography": "sagakit.choreography",
    "sagakit.engine.runtime": "sagakit.runtime",
    "sagakit.engine.startup": "sagakit.runtime",
    "sagakit.engine.relay": "sagakit.relay",
    "sagakit.engine.publisher": "sagakit.publisher",
    "sagakit.engine.rules": "sagakit.rules",
    "sagakit.engine.fused.engine": "sagakit.fused",
    "sagakit.engine.fused.transaction": "sagakit.fused",
}


@pytest.mark.parametrize(("module", "logger"), sorted(LOGGERS.items()))
def test_a_moved_module_logs_under_its_old_name(module: str, logger: str) -> None:
    assert importlib.import_module(module).log.name == logger


def test_a_module_that_never_existed_is_still_not_found() -> None:
    with pytest.raises(ModuleNotFoundError, match=r"No module named 'sagakit\.nothing_here'"):
        importlib.import_module("sagakit.nothing_here")
