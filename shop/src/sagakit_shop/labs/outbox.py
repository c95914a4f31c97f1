"""Lab 5: the transactional outbox.

A service that updates its database and then sends a message can die in between, and
the saga is stuck with a change nobody hears about. The outbox closes that gap: the
message is a row written in the same local transaction as the change, and a relay
publishes committed rows later, marking each sent only once the transport confirmed it.

The lab first shows the transaction is all or nothing (a placement that fails inside
it leaves neither the order nor its message). Then a child process, the order service,
places an order and is killed with SIGKILL right after the commit, before any relay has
published. The outbox row is there, unsent. A restarted shop's relay finds it,
publishes it, and the order's saga runs to its end.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select

from sagakit import Runtime, outcomes
from sagakit.engine.orchestrator import start_message
from sagakit.ports import UnitOfWork
from sagakit.stores.schema import saga_outbox
from sagakit_shop.app import Shop, embedded_urls, open_stores
from sagakit_shop.labs import outbox_child
from sagakit_shop.labs.kit import Narrator, count, lab_transport, open_shop, rows, table, unsent
from sagakit_shop.saga import ORDER_SAGA
from sagakit_shop.services.order import orders
from sagakit_shop.world import default_world

TITLE = "The transactional outbox"
LESSON = (
    "An order and its outgoing message commit in one transaction; the process is killed "
    "before publication; on restart the relay finds the unsent row and publishes it."
)

CHILD_TIMEOUT = 60.0


class _DiedInsideTheTransaction(Exception):
    """The failure the first placement meets after writing, before its commit."""


async def _all_or_nothing(shop: Shop, say: Narrator) -> dict[str, int]:
    """Place an order whose transaction fails after both writes: neither may remain."""

    async def start_then_fail(unit: UnitOfWork, order_id: str, data: dict[str, Any]) -> None:
        await unit.enqueue([start_message(ORDER_SAGA, data, saga_id=order_id, key=order_id)])
        raise _DiedInsideTheTransaction(f"{order_id}: failed after writing both rows")

    say.say("First, a placement that fails after writing the order row and the outbox row:")
    try:
        await shop.orders.place(outbox_child.CUSTOMER, outbox_child.ITEM, 1, start=start_then_fail)
    except _DiedInsideTheTransaction as exc:
        say.say(f"rolled back ({exc})")
    left = {
        "orders": await count(shop.stores["order"], orders),
        "outbox_rows": await count(shop.stores["order"], saga_outbox),
    }
    say.say(f"left behind: {left['orders']} order rows, {left['outbox_rows']} outbox rows")
    return left


async def _crash(directory: Path, say: Narrator) -> int:
    say.say("Now the order service, in a process of its own, places an order:")
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        outbox_child.__name__,
        str(directory),
        *(["--story"] if say.story else []),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        code = await asyncio.wait_for(child.wait(), CHILD_TIMEOUT)
    except TimeoutError:
        child.kill()
        await child.wait()
        raise
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
    say.say(f"the order service process {how}")
    return code


async def run(directory: Path, *, story: bool) -> dict[str, Any]:
    say = Narrator(story=story)
    shop = await open_shop(directory, default_world(orders=1))
    try:
        aborted = await _all_or_nothing(shop, say)
    finally:
        await shop.close()
    exit_code = await _crash(directory, say)

    shop = Shop(open_stores(embedded_urls(directory)))
    try:
        after_crash = await unsent(shop)
        pending = await rows(
            shop.stores["order"], select(saga_outbox).where(saga_outbox.c.sent_at.is_(None))
        )
        placed = await rows(shop.stores["order"], select(orders.c.id, orders.c.status))
        say.say(f"Restarting. The order service's outbox holds {len(pending)} unsent message(s):")
        say.show(
            table(
                "order service outbox, unsent",
                ["row", "type", "saga", "to"],
                [(r.id, r.type, r.saga_id, r.destination) for r in pending],
            )
        )
        if len(placed) != 1:
            raise RuntimeError(f"expected the one order the crashed process placed: {placed}")
        order_id = placed[0].id
        async with Runtime(lab_transport()).add(*shop.components()):
            statuses = await outcomes([shop.saga(order_id)], timeout=30)
        after_restart = await unsent(shop)
        republished = await rows(
            shop.stores["order"],
            select(saga_outbox).where(saga_outbox.c.id.in_([r.id for r in pending])),
        )
        order_rows = await rows(shop.stores["order"], select(orders.c.id, orders.c.status))
    finally:
        await shop.close()
    sent = sum(1 for r in republished if r.sent_at is not None)
    say.say(
        f"the relay published {sent} of {len(pending)} and marked it sent; "
        f"unsent rows now {sum(after_restart.values())}"
    )
    figures: dict[str, Any] = {
        "aborted_transaction_left": aborted,
        "child_exit_code": exit_code,
        "unsent_after_crash": sum(after_crash.values()),
        "unsent_after_crash_by_store": after_crash,
        "republished_on_restart": sent,
        "unsent_after_restart": sum(after_restart.values()),
        "unsent_after_restart_by_store": after_restart,
        "order_id": order_id,
        "saga_status": statuses.get(order_id),
        "order_status": next((r.status for r in order_rows if r.id == order_id), None),
    }
    problems = []
    if any(aborted.values()):
        problems.append(f"a failed transaction left {aborted}")
    if exit_code != -signal.SIGKILL:
        problems.append(f"the order service process was not killed (exit {exit_code})")
    if figures["unsent_after_crash"] < 1:
        problems.append("no unsent outbox row after the crash")
    if figures["unsent_after_restart"]:
        problems.append(f"{figures['unsent_after_restart']} rows still unsent after the restart")
    if figures["saga_status"] != "completed":
        problems.append(f"the saga ended {figures['saga_status']}, not completed")
    figures["problems"] = problems
    return figures
