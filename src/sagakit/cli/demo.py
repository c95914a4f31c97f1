"""``sagakit demo``: a trip-booking saga, end to end, on the embedded default.

Four services, each with its own SQLite file, book a flight, then a hotel and a car
at once (a parallel group), then charge the card (the pivot) and mail the itinerary
(retried until it goes through). Some trips fail on purpose; every one of them must
end fully booked or fully undone, and the demo checks that it did.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy import text

from sagakit.cli.app import app, console, fail
from sagakit.definition import SagaDefinition, Step, StepKind, parallel
from sagakit.errors import StepRejected, TransientError
from sagakit.logs import configure
from sagakit.orchestrator import Orchestrator, StartRequest
from sagakit.participant import Participant, StepContext
from sagakit.runtime import Runtime
from sagakit.stores.dead_letters import SqlDeadLetters
from sagakit.stores.sqlite import SqliteSagaStore
from sagakit.transports.memory import MemoryTransport

TRIP = SagaDefinition(
    "trip",
    steps=[
        Step(
            name="flight", participant="airline", command="reserve_seat", compensation="cancel_seat"
        ),
        parallel(
            Step(
                name="hotel", participant="hotel", command="book_room", compensation="cancel_room"
            ),
            Step(name="car", participant="cars", command="rent_car", compensation="return_car"),
        ),
        Step(name="payment", participant="bank", command="charge", kind=StepKind.PIVOT),
        Step(
            name="itinerary",
            participant="mailer",
            command="send_itinerary",
            kind=StepKind.RETRIABLE,
        ),
    ],
)

CITIES = ["Lisbon", "Oslo", "Kyoto", "Lima", "Cairo"]
NO_CARS = "Kyoto"  # the rental company has no cars here: car rentals fail

_SCHEMA = {
    "airline": "CREATE TABLE IF NOT EXISTS seats (trip TEXT PRIMARY KEY, passenger TEXT)",
    "hotel": "CREATE TABLE IF NOT EXISTS rooms (trip TEXT PRIMARY KEY, city TEXT)",
    "cars": "CREATE TABLE IF NOT EXISTS cars (trip TEXT PRIMARY KEY, city TEXT)",
    "bank": "CREATE TABLE IF NOT EXISTS charges (trip TEXT PRIMARY KEY, amount INTEGER)",
    "mailer": "CREATE TABLE IF NOT EXISTS mails (trip TEXT PRIMARY KEY, sent_to TEXT)",
}


async def _insert(ctx: StepContext, table: str, **values: Any) -> None:
    columns = ", ".join(values)
    params = ", ".join(f":{name}" for name in values)
    await ctx.connection.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({params})"), values)


async def _delete(ctx: StepContext, table: str) -> None:
    await ctx.connection.execute(
        text(f"DELETE FROM {table} WHERE trip = :trip"), {"trip": ctx.saga_id}
    )


def _services(stores: dict[str, SqliteSagaStore], seed: int) -> list[Participant]:
    flaky = random.Random(seed)  # noqa: S311 - a seeded demo, not security
    airline = Participant("airline", stores["airline"])
    hotel = Participant("hotel", stores["hotel"])
    cars = Participant("cars", stores["cars"])
    bank = Participant("bank", stores["bank"])
    mailer = Participant("mailer", stores["mailer"])

    @airline.command("reserve_seat")
    async def reserve_seat(ctx: StepContext) -> dict[str, Any]:
        await _insert(ctx, "seats", trip=ctx.saga_id, passenger=ctx.payload["traveller"])
        ctx.log.info(f"Seat reserved for {ctx.payload['traveller']} to {ctx.payload['city']}")
        return {"seat": f"{flaky.randint(1, 40)}{flaky.choice('ABCDEF')}"}

    @airline.command("cancel_seat")
    async def cancel_seat(ctx: StepContext) -> None:
        await _delete(ctx, "seats")
        ctx.log.info(f"Seat of {ctx.payload['traveller']} released")

    @hotel.command("book_room")
    async def book_room(ctx: StepContext) -> None:
        await _insert(ctx, "rooms", trip=ctx.saga_id, city=ctx.payload["city"])
        ctx.log.info(f"Room booked in {ctx.payload['city']} for {ctx.payload['traveller']}")

    @hotel.command("cancel_room")
    async def cancel_room(ctx: StepContext) -> None:
        await _delete(ctx, "rooms")
        ctx.log.info(f"Room in {ctx.payload['city']} cancelled")

    @cars.command("rent_car")
    async def rent_car(ctx: StepContext) -> None:
        if ctx.payload["city"] == NO_CARS:
            raise StepRejected(f"no cars left in {NO_CARS}")
        await _insert(ctx, "cars", trip=ctx.saga_id, city=ctx.payload["city"])
        ctx.log.info(f"Car rented in {ctx.payload['city']}")

    @cars.command("return_car")
    async def return_car(ctx: StepContext) -> None:
        await _delete(ctx, "cars")
        ctx.log.info(f"Car in {ctx.payload['city']} returned")

    @bank.command("charge")
    async def charge(ctx: StepContext) -> None:
        amount = int(ctx.payload["amount"])
        if ctx.payload.get("card_declined"):
            raise StepRejected(f"card declined for ${amount}")
        await _insert(ctx, "charges", trip=ctx.saga_id, amount=amount)
        ctx.log.info(f"Charged ${amount} to {ctx.payload['traveller']}")

    @mailer.command("send_itinerary")
    async def send_itinerary(ctx: StepContext) -> None:
        if ctx.attempt == 1 and flaky.random() < 0.3:
            raise TransientError("mail server busy")
        await _insert(ctx, "mails", trip=ctx.saga_id, sent_to=ctx.payload["traveller"])
        ctx.log.info(f"Itinerary mailed to {ctx.payload['traveller']}")

    return [airline, hotel, cars, bank, mailer]


def _trips(count: int, fail_rate: float, seed: int) -> list[StartRequest]:
    rng = random.Random(seed)  # noqa: S311 - a seeded demo, not security
    names = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Leslie", "Donald", "Frances"]
    requests = []
    for number in range(1, count + 1):
        failing = rng.random() < fail_rate
        city = NO_CARS if failing and rng.random() < 0.5 else rng.choice(CITIES[:2] + CITIES[3:])
        data = {
            "traveller": rng.choice(names),
            "city": city,
            "amount": rng.randint(300, 2500),
            "card_declined": failing and city != NO_CARS,
        }
        requests.append(StartRequest("trip", data, key=f"trip-{number}"))
    return requests


async def _count(store: SqliteSagaStore, table: str) -> set[str]:
    async with store.unit() as unit:
        rows = await unit.connection.execute(text(f"SELECT trip FROM {table}"))
        return {row[0] for row in rows}


async def _run(directory: Path, trips: int, fail_rate: float, seed: int) -> dict[str, Any]:
    names = ["orchestrator", *_SCHEMA]
    stores = {name: SqliteSagaStore(directory / f"{name}.db") for name in names}
    for name, store in stores.items():
        await store.migrate()
        if name in _SCHEMA:
            async with store.unit() as unit:
                await unit.connection.execute(text(_SCHEMA[name]))
    orchestrator = Orchestrator(stores["orchestrator"], [TRIP])
    # Dead letters outlive the process, in the orchestrator's file: `sagakit dlq` reads them.
    transport = MemoryTransport(dead_letters=SqlDeadLetters(stores["orchestrator"]))
    runtime = Runtime(transport).add(orchestrator, *_services(stores, seed))
    started = time.perf_counter()
    async with runtime:
        ids = await orchestrator.start_many(_trips(trips, fail_rate, seed))
        statuses = await runtime.wait_for(stores["orchestrator"], ids, timeout=120)
    elapsed = time.perf_counter() - started
    booked = {
        t: await _count(stores[s], t)
        for s, t in [
            ("airline", "seats"),
            ("hotel", "rooms"),
            ("cars", "cars"),
            ("bank", "charges"),
            ("mailer", "mails"),
        ]
    }
    completed = {i for i, s in statuses.items() if s == "completed"}
    # All or nothing: a completed trip holds everything, any other trip holds nothing.
    whole = all(booked[table] == completed for table in booked)
    rows = await stores["orchestrator"].list_sagas(limit=trips)
    for store in stores.values():
        await store.close()
    return {
        "ids": ids,
        "statuses": statuses,
        "elapsed": elapsed,
        "all_or_nothing": whole,
        "rows": rows,
        "db": stores["orchestrator"].url,
    }


@app.command()
def demo(
    trips: Annotated[int, typer.Option(min=1, max=100_000, help="How many trips to book.")] = 12,
    fail_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of trips set up to fail.")
    ] = 0.3,
    seed: Annotated[int, typer.Option(help="Seed for the trips and the failures.")] = 7,
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the services keep their SQLite files.")
    ] = Path(".sagakit/demo"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    quiet: Annotated[bool, typer.Option(help="No running story, just the summary.")] = False,
) -> None:
    """Book trips with a saga on the embedded default and check none is half done."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("orchestrator", *_SCHEMA):  # a fresh run, without touching anything else
        for suffix in (".db", ".db-wal", ".db-shm"):
            (directory / f"{name}{suffix}").unlink(missing_ok=True)
    configure("quiet" if as_json or quiet else "story")
    result = asyncio.run(_run(directory, trips, fail_rate, seed))
    counts = Counter(result["statuses"].values())
    summary = {
        "trips": trips,
        "completed": counts.get("completed", 0),
        "compensated": counts.get("compensated", 0),
        "needs_attention": counts.get("needs_attention", 0),
        "all_or_nothing": result["all_or_nothing"],
        "elapsed_s": round(result["elapsed"], 3),
        "sagas_per_s": round(trips / result["elapsed"], 1),
    }
    if as_json:
        console.print_json(json.dumps(summary))
    else:
        _report(summary, result)
    if not result["all_or_nothing"] or summary["needs_attention"]:
        raise fail("some trip was left half done", 1)


def _report(summary: dict[str, Any], result: dict[str, Any]) -> None:
    from sagakit.cli.render import saga_table

    console.print()
    console.print(saga_table(result["rows"][:20], title="trips"))
    table = Table(title="summary", title_justify="left", show_header=False)
    for name, value in summary.items():
        table.add_row(name, str(value))
    console.print(table)
    verdict = "[green]every trip is fully booked or fully undone[/]"
    if not summary["all_or_nothing"]:
        verdict = "[bold red]some trip is half done[/]"
    console.print(verdict)
    sample = next((r.saga_id for r in result["rows"] if r.status == "compensated"), None)
    db = result["db"]
    console.print(f"\ninspect: [bold]sagakit list --db {db}[/]")
    if sample:
        console.print(f"         [bold]sagakit show {sample} --db {db}[/]")
