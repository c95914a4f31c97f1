"""Transports for the contract suite: the in-process one and the real RabbitMQ."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sagakit.ports import Transport
from sagakit.transports.memory import MemoryTransport
from tests.conftest import open_rabbit

#: Short retry tiers and a low delivery limit keep the retry tests quick.
TIERS = (0.05, 0.1, 0.2)
MAX_DELIVERIES = 3


@pytest.fixture(params=["memory", "rabbitmq"])
async def transport(request: pytest.FixtureRequest, amqp_url: str) -> AsyncIterator[Transport]:
    if request.param == "memory":
        memory = MemoryTransport(retry_tiers=TIERS, max_deliveries=MAX_DELIVERIES)
        await memory.start()
        yield memory
        await memory.close()
        return
    rabbit = await open_rabbit(amqp_url, retry_tiers=TIERS, max_deliveries=MAX_DELIVERIES)
    try:
        yield rabbit
    finally:
        await rabbit.teardown()
        await rabbit.close()
