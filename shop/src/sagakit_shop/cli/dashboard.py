"""What ``sagakit demo --serve`` and ``sagakit up`` do alike for the dashboard they serve:
its port, its tokens (configured or made up) and how its address is printed, and trace
ids for it to show."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from sagakit.cli import console, fail

if TYPE_CHECKING:
    from pathlib import Path

    from sagakit.api import Token

ShowTokensOption = Annotated[
    bool,
    typer.Option(
        "--show-tokens",
        help="Print the dashboard's address with each token in it (for a local demo: "
        "anything printed ends up in scrollback and logs).",
    ),
]

AdminPortOption = Annotated[
    int | None,
    typer.Option(
        min=1, max=65535, help="Port of the dashboard and admin API (default: --port + 1)."
    ),
]


def dashboard_port(port: int, asked: int | None) -> int:
    """The dashboard and admin API's port: the one asked for, or next to the order API's."""
    return asked or (port + 1 if port < 65535 else port - 1)


def trace_ids_for_the_dashboard() -> None:
    """Spans kept nowhere, so every saga still gets a trace id the dashboard can show.
    (Without the SDK, the 'otel' extra, there are no trace ids to show.)"""
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return
    trace.set_tracer_provider(TracerProvider())


def dashboard_tokens(fresh_file: Path) -> tuple[list[Token], str]:
    """The configured tokens, or fresh ones written to ``fresh_file``; and where."""
    from sagakit.api.auth import configured_or_fresh

    try:
        return configured_or_fresh(fresh_file)
    except ValueError as exc:  # says which item, never what it holds
        raise fail(f"SAGAKIT_TOKENS: {exc}", 2) from exc


def print_dashboard(admin: str, tokens: list[Token], *, where: str, show: bool = False) -> None:
    """The dashboard's address, and where its tokens are (each by its first characters);
    with ``show``, the address with each token in it (in the fragment, which no server
    sees; the dashboard exchanges it for a session and drops it from the address bar)."""
    if show:
        for token in tokens:
            url = f"{admin}/#token={token.secret}"
            console.print(f"[bold]dashboard[/] ({token.role}): {url}", soft_wrap=True)
    else:
        console.print(f"[bold]dashboard[/]: {admin}/", soft_wrap=True)
        known = ", ".join(f"{t.role} {t.name} ({t.hint})" for t in tokens)
        console.print(f"  sign in with a token from {where}: {escape(known)}", soft_wrap=True)
    console.print(f"[bold]admin API[/] docs: {admin}/api/docs")
