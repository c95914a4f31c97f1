"""The order service process of lab 5, which dies on purpose.

``python -m sagakit_shop.labs.outbox_child DIR [--story]`` places one order in the shop whose
files are in DIR: the order row and the message that starts its saga commit in one
local transaction. Then the process kills itself with SIGKILL, before any outbox relay
has run: the message is committed but unpublished. No relay is started here at all, so
"before publication" is certain, not a race the lab usually wins.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from sagakit.observe.logs import configure, get_logger
from sagakit_shop.app import LOGS, Shop, embedded_urls, open_stores

CUSTOMER, ITEM, QUANTITY = "c-ada", "lamp", 2


async def place_then_die(directory: Path) -> None:
    log = get_logger("shop.lab", service="order-process")
    shop = Shop(open_stores(embedded_urls(directory)))
    log.info(f"pid {os.getpid()}: one transaction: the order row and its outbox row")
    placed = await shop.place(CUSTOMER, ITEM, QUANTITY)
    log.warning(f"committed order #{placed.number}; crashing (SIGKILL) before any relay publishes")
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> None:
    configure("story" if "--story" in argv else "quiet", also=LOGS)
    asyncio.run(place_then_die(Path(argv[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
