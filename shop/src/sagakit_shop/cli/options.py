"""What the shop's commands share: the options for the mode, the order API's port and the
distributed shop's database and broker, and the checks of what they are given."""

from __future__ import annotations

from typing import Annotated

import typer

from sagakit_shop.app import MODES, Mode

ModeOption = Annotated[
    str, typer.Option("--mode", help="orchestration (a coordinator) or choreography (events).")
]
OrderApiPortOption = Annotated[int, typer.Option(min=1, max=65535, help="Port of the order API.")]
BrokerOption = Annotated[
    str,
    typer.Option(
        "--broker", envvar="SAGAKIT_BROKER", help="RabbitMQ URL; ?prefix=... namespaces queues."
    ),
]
BaseDbOption = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="SAGAKIT_DB",
        help="PostgreSQL URL whose database name is the stem: shop -> shop_order, shop_saga, ...",
    ),
]
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/shop"


def check_mode(mode: str) -> Mode:
    """``--mode`` as a :data:`Mode`, or a usage error naming the choices."""
    if mode not in MODES:
        raise typer.BadParameter(f"choose one of {', '.join(MODES)}", param_hint="'--mode'")
    return mode


def check_postgres(db: str) -> None:
    """A usage error unless ``--db`` is a PostgreSQL URL, all the distributed shop runs on."""
    if not db.startswith(("postgresql://", "postgres://")):
        raise typer.BadParameter(
            "the distributed shop needs a postgresql:// URL", param_hint="'--db'"
        )
