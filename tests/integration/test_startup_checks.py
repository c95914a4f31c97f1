"""What a runtime checks as it starts: stores at the current migration, steps served."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from alembic import command

from sagakit import Orchestrator, Participant, Runtime, StepContext, StoreError
from sagakit.engine.choreography import Choreography
from sagakit.model.definition import SagaDefinition, Step, StepKind, approval
from sagakit.stores import open_store
from sagakit.stores.migrations import HEAD
from sagakit.stores.sql import _alembic_config
from sagakit.stores.sqlite import SqliteSagaStore
from sagakit.transports.memory import MemoryTransport
from sagakit.transports.rabbitmq import RabbitTransport

CONCERT = SagaDefinition(
    "concert",
    steps=[
        Step(name="seats", participant="seats", command="hold", compensation="release"),
        approval("manager"),
        Step(name="parking", participant="parking", command="reserve", kind=StepKind.PIVOT),
    ],
)


def served(name: str, store: object) -> Participant:
    participant = Participant(name, store)  # type: ignore[arg-type]

    @participant.command("hold")
    async def hold(ctx: StepContext) -> None:
        return None

    return participant


async def warnings_at_start(runtime: Runtime, caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings ``runtime`` logs as it starts and stops (its stores closed after)."""
    try:
        with caplog.at_level(logging.WARNING, logger="sagakit.runtime"):
            async with runtime:
                pass
    finally:
        for store in runtime.stores:
            await store.close()
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_a_store_with_no_tables_stops_the_start_with_the_fix(pg_url: str) -> None:
    store = open_store(pg_url)
    runtime = Runtime().add(Orchestrator(store, [CONCERT]))
    try:
        with pytest.raises(StoreError) as raised:
            await runtime.start()
        message = str(raised.value)
        assert "has no sagakit tables" in message
        assert f"run `sagakit migrate --db {pg_url}`" in message
        assert "\n" not in message
        assert not runtime.running
    finally:
        await store.close()


async def test_a_store_behind_names_its_migration_and_migrate_brings_it_to_head(
    pg_url: str,
) -> None:
    store = open_store(pg_url)
    try:
        async with store.engine.begin() as conn:  # a database an older sagakit migrated
            await conn.run_sync(lambda c: command.upgrade(_alembic_config(c), "0005"))
        with pytest.raises(StoreError, match=f"at migration 0005, not {HEAD}"):
            await Runtime().add(Orchestrator(store, [CONCERT])).start()
        async with Runtime(migrate=True).add(Orchestrator(store, [CONCERT])) as runtime:
            assert runtime.running
        assert await store.schema_version() == HEAD
    finally:
        await store.close()


async def test_an_embedded_store_that_migrates_itself_starts_and_one_that_does_not_is_refused(
    tmp_path: Path,
) -> None:
    itself = open_store(f"sqlite:///{tmp_path / 'new.db'}")
    held_back = SqliteSagaStore(str(tmp_path / "held.db"), auto_migrate=False)
    try:
        async with Runtime().add(Orchestrator(itself, [CONCERT])):
            pass
        with pytest.raises(StoreError, match="sagakit migrate --db sqlite:///"):
            await Runtime().add(Orchestrator(held_back, [CONCERT])).start()
    finally:
        await itself.close()
        await held_back.close()


async def test_participants_nobody_serves_in_process_are_named_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'saga.db'}")
    runtime = Runtime().add(Orchestrator(store, [CONCERT]), served("seats", store))
    warnings = await warnings_at_start(runtime, caplog)
    assert len(warnings) == 1, warnings  # seats is served; an approval needs no queue
    assert "participant 'parking'" in warnings[0]
    assert "concert" in warnings[0]
    assert "in-process transport" in warnings[0]


async def test_participants_with_no_queue_on_the_broker_are_named_at_start(
    rabbit: RabbitTransport, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'saga.db'}")
    try:
        await rabbit.declare("sagakit.commands.parking")  # served by another process
        with caplog.at_level(logging.WARNING, logger="sagakit.runtime"):
            async with Runtime(rabbit).add(Orchestrator(store, [CONCERT])):
                pass
    finally:
        await store.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "participant 'seats'" in warnings[0]
    assert f"no queue '{rabbit.prefix}sagakit.commands.seats'" in warnings[0]


async def test_a_participant_served_by_another_runtime_on_the_same_transport_is_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'saga.db'}")
    shared = MemoryTransport()
    services = Runtime(shared).add(served("seats", store), served("parking", store))
    try:
        async with services:
            with caplog.at_level(logging.WARNING, logger="sagakit.runtime"):
                async with Runtime(shared).add(Orchestrator(store, [CONCERT])):
                    pass
    finally:
        await store.close()
    assert [r for r in caplog.records if r.levelno == logging.WARNING] == []


async def test_choreographed_participants_nobody_follows_are_named_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In a choreography nobody sends commands: each participant follows the saga's
    events on a queue of its own, and one that nobody follows holds every saga."""
    trip = SagaDefinition(
        "trip",
        steps=[
            Step(name="seats", participant="seats", command="hold", compensation="release"),
            Step(name="hotel", participant="hotel", command="book", kind=StepKind.PIVOT),
        ],
    )
    store = open_store(f"sqlite:///{tmp_path / 'saga.db'}")
    seats = served("seats", store)

    @seats.command("release")
    async def release(ctx: StepContext) -> None:
        return None

    choreography = Choreography([trip])
    runtime = Runtime().add(choreography.tracker(store), choreography.follow(seats))
    warnings = await warnings_at_start(runtime, caplog)
    assert len(warnings) == 1, warnings  # seats follows its events; hotel does not
    assert "saga definition(s) trip name participant 'hotel'" in warnings[0]
    assert "its events wait until something serves it" in warnings[0]
