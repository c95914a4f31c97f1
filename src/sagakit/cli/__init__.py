"""The ``sagakit`` command line, and what commands other distributions add to it (through
the ``sagakit.commands`` entry-point group) print with: ``console``, ``errors``,
``fail``, ``say_error``, and ``safe`` and ``timeline`` from the renderings."""

from __future__ import annotations

import sys

from sagakit.cli.app import COMMANDS_GROUP, app, console, errors, fail, say_error
from sagakit.cli.render import safe, timeline


def main() -> None:
    """Run a command; a usage error is one line on stderr, as every other error is."""
    try:
        code = app(standalone_mode=False)
    except Exception as exc:
        # The command line's own errors (a bad option, a missing argument, an abort at
        # a prompt) carry an exit code and a message; anything else is a bug: raise it.
        exit_code = getattr(exc, "exit_code", None)
        if type(exc).__name__ == "Abort":
            say_error("aborted")
            sys.exit(1)
        if not isinstance(exit_code, int) or not hasattr(exc, "format_message"):
            raise
        context = getattr(exc, "ctx", None)
        hint = f" (see {context.command_path} --help)" if context is not None else ""
        say_error(f"{exc.format_message()}{hint}")
        sys.exit(exit_code)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = [
    "COMMANDS_GROUP",
    "app",
    "console",
    "errors",
    "fail",
    "main",
    "safe",
    "say_error",
    "timeline",
]
