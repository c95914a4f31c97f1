"""The shop's commands in the ``sagakit`` CLI: demo (and, distributed: up, service,
order, verify). ``app`` is what the ``sagakit.commands`` entry point ``shop`` names; the
commands live in the modules beside this one and are added here, in the order
``sagakit --help`` lists them."""

from __future__ import annotations

import typer

from sagakit_shop.cli.books import verify
from sagakit_shop.cli.dashboard import ShowTokensOption, print_dashboard
from sagakit_shop.cli.distributed import gateway_books_for, service, up
from sagakit_shop.cli.embedded import demo
from sagakit_shop.cli.options import (
    DEFAULT_BROKER,
    DEFAULT_PG,
    BaseDbOption,
    BrokerOption,
    ModeOption,
)
from sagakit_shop.cli.orders import ApiOption, order, place_order, show_order

#: The shop's commands; the ``sagakit.commands`` entry point ``shop`` adds them to ``sagakit``.
app = typer.Typer()
app.command()(demo)
app.command()(up)
app.command()(service)
app.command()(verify)
app.add_typer(order, name="order")

__all__ = [
    "DEFAULT_BROKER",
    "DEFAULT_PG",
    "ApiOption",
    "BaseDbOption",
    "BrokerOption",
    "ModeOption",
    "ShowTokensOption",
    "app",
    "demo",
    "gateway_books_for",
    "order",
    "place_order",
    "print_dashboard",
    "service",
    "show_order",
    "up",
    "verify",
]
