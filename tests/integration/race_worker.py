"""One orchestrator process racing another over the same replies (see test_two_orchestrators)."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path

from sagakit import Orchestrator, open_store
from sagakit.model.messages import TransportMessage
from sagakit.ports import Delivery
from tests.sagas import ORDER


async def main(url: str, bodies: list[bytes], seed: int) -> None:
    rng = random.Random(seed)
    deliveries = bodies * 2  # every reply twice in this process as well
    rng.shuffle(deliveries)
    store = open_store(url)
    orchestrator = Orchestrator(store, [ORDER])
    while deliveries:
        size = rng.randint(1, 20)
        batch, deliveries = deliveries[:size], deliveries[size:]
        await orchestrator.handle(
            [Delivery(TransportMessage("q", str(i), body)) for i, body in enumerate(batch)]
        )
    await store.close()


if __name__ == "__main__":
    replies = [body.encode() for body in json.loads(Path(sys.argv[2]).read_text())]
    asyncio.run(main(sys.argv[1], replies, int(sys.argv[3])))
