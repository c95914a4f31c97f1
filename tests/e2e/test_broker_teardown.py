"""``sagakit broker teardown``: a namespace's queues and exchange listed and removed on the
real RabbitMQ, never while something consumes from them unless forced."""

from __future__ import annotations

import json

import aio_pika

from sagakit.transports.rabbit_namespace import connected, probe
from sagakit.transports.rabbitmq import RabbitTransport
from tests.conftest import AMQP_URL
from tests.e2e.helpers import sagakit

DEFINITIONS = "tests.e2e.service_app:BOOKING"


async def nothing_raw(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    return None


async def test_teardown_refuses_while_consumed_then_removes_every_name(
    rabbit: RabbitTransport,
) -> None:
    prefix = rabbit.prefix
    for queue in (
        "sagakit.commands.seats",
        "sagakit.commands.card",
        "sagakit.replies.orchestrator",
    ):
        await rabbit.declare(queue)
    await rabbit.send_to_queue(rabbit.name("sagakit.commands.card"), aio_pika.Message(b"{}"))
    # a consumer of another process (a plain connection: a robust one would declare
    # its queue again once it is deleted)
    other = await aio_pika.connect(AMQP_URL)
    channel = await other.channel()
    seats = await channel.get_queue(rabbit.name("sagakit.commands.seats"), ensure=False)
    await seats.consume(nothing_raw)
    args = ["broker", "teardown", "--prefix", prefix, "--broker", AMQP_URL]
    args += ["--definitions", DEFINITIONS, "--json"]

    refused = sagakit(*args)
    assert refused.code == 1, str(refused)
    listing = json.loads(refused.out)
    assert listing["removed"] is False
    assert listing["broker"] == AMQP_URL.replace("guest:guest", "guest:***")
    assert "guest:guest" not in refused.output
    by_name = {q["name"]: q for q in listing["queues"]}
    assert by_name[f"{prefix}sagakit.commands.seats"]["consumers"] == 1
    assert by_name[f"{prefix}sagakit.commands.card"]["messages"] == 1
    tiers = len(rabbit.retry_tiers)
    assert len(by_name) == 3 * (1 + tiers) + 1  # three work queues, their tiers, dead letters
    assert listing["exchange"] == f"{prefix}sagakit.events"
    assert refused.err.count("\n") == 1
    assert "1 consumer(s) attached" in refused.err
    async with connected(rabbit) as connection:
        assert await probe(connection, f"{prefix}sagakit.commands.seats") is not None

    forced = sagakit(*args[:-1], "--force")  # plain text this time
    assert forced.code == 0, str(forced)
    assert f"removed queue {prefix}sagakit.commands.card (1 messages, 0 consumers)" in forced.out
    assert f"removed exchange {prefix}sagakit.events" in forced.out
    async with connected(rabbit) as connection:
        for name in by_name:
            assert await probe(connection, name) is None, name
    await other.close()

    again = sagakit(*args[:-1])
    assert again.code == 0, str(again)
    assert f"nothing under prefix '{prefix}'" in again.out
