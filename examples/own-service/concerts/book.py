"""Book concerts and wait for every booking's end: ``python -m concerts.book 20``.

Every fourth booking costs more than the card allows, so its saga is compensated.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter

from concerts.service import BOOKING
from sagakit import Orchestrator, open_store, outcomes


async def main(count: int) -> None:
    store = open_store(os.environ["CONCERTS_DB"])
    try:
        orchestrator = Orchestrator(store, [BOOKING])  # starts sagas; the service runs them
        handles = [
            await orchestrator.start(
                BOOKING.name, {"seats": 2, "amount": 900 if n % 4 == 3 else 80}
            )
            for n in range(count)
        ]
        ends = await outcomes(handles, timeout=60)
        print(", ".join(f"{status} {n}" for status, n in sorted(Counter(ends.values()).items())))
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10))
