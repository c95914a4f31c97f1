"""Lab 8: the overbooked flight: 100 concurrent sagas for the last 10 seats.

Sagas give up isolation: a saga's writes are visible to the others before it has
finished, and it may yet undo them. The lab books a flight twice with the same saga
(hold a seat -> charge the card -> issue the ticket, the pivot), for 100 travellers at
once, 40% of whose cards are declined.

*Without countermeasures* the airline does what a first version does: it reads the
seats left, writes back that number minus one, and undoes a hold by writing back the
number it saw. Two anomalies follow:

* **lost update** - a declined traveller's undo writes back an old count and erases
  the holds other sagas made in between: the counter no longer matches the tickets;
* **dirty read** - a traveller who finds 0 seats left is turned away, though some of
  the holds that made it 0 belong to sagas that are about to be undone: seats fly
  empty while paying travellers were refused.

*With countermeasures* the same saga runs against an airline that updates the counter
commutatively (``seats_left = seats_left - 1``, undone with ``+ 1``), marks the seat it
holds with a semantic lock (a saga finding every free seat pending waits and retries
instead of reading it as sold), and re-reads its lock before the pivot. Exactly 10
travellers fly, the other 90 sagas are compensated, and nobody is charged without a
seat.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, update

from sagakit import (
    LockPolicy,
    Orchestrator,
    Participant,
    RetryPolicy,
    Runtime,
    SagaDefinition,
    StartRequest,
    Step,
    StepContext,
    StepKind,
    StepRejected,
    open_store,
    outcomes,
)
from sagakit.engine.locks import LockBusy
from sagakit.stores.sql import SqlSagaStore
from sagakit_shop.labs.kit import (
    Narrator,
    lab_transport,
    never_published,
    open_shop,
    rows,
    table,
    unsent,
)
from sagakit_shop.services.payment import payments
from sagakit_shop.world import Customer, Item, World, dollars

TITLE = "The overbooked flight"
LESSON = (
    "100 concurrent sagas for the last 10 seats: without countermeasures a lost update "
    "and a dirty read; with commutative updates and semantic locks exactly 10 fly."
)

SEATS = 10
TRAVELLERS = 100
FARE_CENTS = 250_00
FLIGHT = "SK-1010"

FLIGHT_BOOKING = SagaDefinition(
    "flight_booking",
    steps=[
        Step(
            name="hold_seat",
            participant="airline",
            command="hold",
            compensation="release",
            # A saga that finds every seat pending waits for the holders to finish.
            retry=RetryPolicy(
                attempts=None, backoff=timedelta(milliseconds=40), cap=timedelta(milliseconds=300)
            ),
        ),
        Step(name="charge_fare", participant="payment", command="charge", compensation="refund"),
        Step(name="issue_ticket", participant="airline", command="ticket", kind=StepKind.PIVOT),
    ],
)

metadata = MetaData()
flights = Table(
    "flights",
    metadata,
    Column("flight", String(16), primary_key=True),
    Column("seats_left", Integer, nullable=False),
)
seats = Table(
    "seats",
    metadata,
    Column("flight", String(16), primary_key=True),
    Column("seat", Integer, primary_key=True),
    Column("ticketed_to", String(64)),
)
holds = Table(
    "holds",
    metadata,
    Column("saga_id", String(64), primary_key=True),
    Column("seat", Integer),
    Column("seen_left", Integer, nullable=False),  # the count the hold read
)
tickets = Table(
    "tickets",
    metadata,
    Column("saga_id", String(64), primary_key=True),
    Column("seat", Integer),
)


class Airline:
    """The airline's participant; ``careful`` switches the countermeasures on."""

    def __init__(self, store: SqlSagaStore, *, careful: bool) -> None:
        self.store = store
        self.careful = careful
        self.participant = Participant("airline", store, service_log="shop.airline")
        self.participant.on("hold", self.hold)
        self.participant.on("release", self.release)
        self.participant.on("ticket", self.ticket)

    async def install(self) -> None:
        await self.store.migrate()
        async with self.store.unit() as unit:
            await unit.connection.run_sync(metadata.create_all)
            await unit.connection.execute(insert(flights).values(flight=FLIGHT, seats_left=SEATS))
            await unit.connection.execute(
                insert(seats), [{"flight": FLIGHT, "seat": n} for n in range(1, SEATS + 1)]
            )

    async def _left(self, ctx: StepContext) -> int:
        found = await ctx.connection.scalar(
            select(flights.c.seats_left).where(flights.c.flight == FLIGHT)
        )
        return int(found or 0)

    async def hold(self, ctx: StepContext) -> dict[str, int]:
        who = ctx.payload["traveller"]
        left = await self._left(ctx)
        if not self.careful:
            # Read-modify-write on a count that includes other sagas' pending holds.
            if left <= 0:
                raise StepRejected(f"sold out: 0 of {SEATS} seats left for {who}")
            await ctx.connection.execute(
                update(flights).where(flights.c.flight == FLIGHT).values(seats_left=left - 1)
            )
            await ctx.connection.execute(
                insert(holds).values(saga_id=ctx.saga_id, seat=None, seen_left=left)
            )
            ctx.log.info(f"Held a seat for {who}: {left - 1} left")
            return {"seen_left": left}
        seat = await self._free_seat(ctx)
        await ctx.connection.execute(
            update(flights)
            .where(flights.c.flight == FLIGHT)
            .values(seats_left=flights.c.seats_left - 1)
        )
        await ctx.connection.execute(
            insert(holds).values(saga_id=ctx.saga_id, seat=seat, seen_left=left)
        )
        ctx.log.info(f"Held seat {seat} for {who} (pending until the saga ends)")
        return {"seat": seat}

    async def _free_seat(self, ctx: StepContext) -> int:
        """A seat nobody has a ticket for and no saga holds, locked for this saga. With
        every such seat pending, wait: a holder may yet let it go."""
        unticketed = [
            int(n)
            for n in await ctx.connection.scalars(
                select(seats.c.seat)
                .where(seats.c.flight == FLIGHT, seats.c.ticketed_to.is_(None))
                .order_by(seats.c.seat)
            )
        ]
        if not unticketed:
            raise StepRejected(f"sold out: every seat is ticketed ({ctx.payload['traveller']})")
        holder = None
        for seat in unticketed:
            holder = await ctx.locks.holder(_resource(seat))
            if holder is None:
                await ctx.locks.acquire(_resource(seat), policy=LockPolicy.RETRY)
                return seat
        raise LockBusy(f"every free seat on {FLIGHT}", holder, LockPolicy.RETRY)

    async def release(self, ctx: StepContext) -> None:
        hold = (
            await ctx.connection.execute(select(holds).where(holds.c.saga_id == ctx.saga_id))
        ).first()
        if hold is None:
            return  # the hold never happened: nothing to undo
        if self.careful:
            await ctx.connection.execute(
                update(flights)
                .where(flights.c.flight == FLIGHT)
                .values(seats_left=flights.c.seats_left + 1)
            )
            await ctx.locks.release(_resource(hold.seat))
        else:
            # Undo by writing back what the hold saw: whatever happened since is lost.
            await ctx.connection.execute(
                update(flights).where(flights.c.flight == FLIGHT).values(seats_left=hold.seen_left)
            )
        ctx.log.info(f"Released the seat of {ctx.payload['traveller']}")

    async def ticket(self, ctx: StepContext) -> dict[str, int | None]:
        hold = (
            await ctx.connection.execute(select(holds).where(holds.c.saga_id == ctx.saga_id))
        ).one()
        if self.careful:
            await ctx.locks.ensure_held(_resource(hold.seat))  # the re-read before the pivot
            await ctx.connection.execute(
                update(seats)
                .where(seats.c.flight == FLIGHT, seats.c.seat == hold.seat)
                .values(ticketed_to=ctx.saga_id)
            )
        await ctx.connection.execute(insert(tickets).values(saga_id=ctx.saga_id, seat=hold.seat))
        ctx.log.info(f"Ticket issued to {ctx.payload['traveller']}")
        return {"seat": hold.seat}


def _resource(seat: int) -> str:
    return f"{FLIGHT}/seat/{seat}"


def travellers() -> World:
    """100 travellers, every fifth and every fifth-but-two with a declined card (40%)."""
    people = tuple(
        Customer(
            id=f"t{n:03d}",
            name=f"Traveller {n}",
            email=f"t{n:03d}@example.com",
            region="EU",
            balance_cents=1000_00,
            card_declined=n % 5 in (0, 2),
        )
        for n in range(1, TRAVELLERS + 1)
    )
    return World(people, (Item("fare", "Seat on " + FLIGHT, FARE_CENTS, SEATS),))


async def book(directory: Path, *, careful: bool, say: Narrator) -> dict[str, Any]:
    """Run the 100 sagas against one airline and measure what they left behind."""
    world = travellers()
    shop = await open_shop(directory, world, extra_dbs=("airline",))
    airline = Airline(open_store(f"sqlite:///{directory / 'airline.db'}"), careful=careful)
    try:
        await airline.install()
        orchestrator = Orchestrator(shop.saga_store, [FLIGHT_BOOKING], rules=False)
        payment = shop.services["payment"].participant
        requests = [
            StartRequest(
                FLIGHT_BOOKING.name,
                {
                    "traveller": c.name,
                    "customer_id": c.id,
                    "customer": c.name,
                    "order_id": f"{'careful' if careful else 'naive'}-{c.id}",
                    "number": number,
                    "amount_cents": FARE_CENTS,
                },
                saga_id=f"{c.id}",
            )
            for number, c in enumerate(world.customers, start=1)
        ]
        async with Runtime(lab_transport()).add(orchestrator, airline.participant, payment):
            ids = await orchestrator.start_many(requests)
            statuses = await outcomes([shop.saga(i) for i in ids], timeout=120)
        left = await unsent(shop)
        left["airline"] = await airline.store.unsent_count()
        figures = await _measure(shop.stores["payment"], airline.store, statuses)
    finally:
        await airline.store.close()
        await shop.close()
    figures["unsent_outbox_rows"] = left
    return figures


async def _measure(
    payment_store: SqlSagaStore, airline_store: SqlSagaStore, statuses: Mapping[str, str]
) -> dict[str, Any]:
    ticketed = {r.saga_id: r.seat for r in await rows(airline_store, select(tickets))}
    [[seats_left]] = await rows(airline_store, select(flights.c.seats_left))
    net: dict[str, int] = {}
    for row in await rows(payment_store, select(payments)):
        sign = 1 if row.kind == "charge" else -1
        saga = row.order_id.split("-", 1)[1]
        net[saga] = net.get(saga, 0) + sign * row.amount_cents
    paid_without_ticket = sorted(s for s, cents in net.items() if cents and s not in ticketed)
    seats_given = [seat for seat in ticketed.values() if seat is not None]
    completed = sum(1 for s in statuses.values() if s == "completed")
    compensated = sum(1 for s in statuses.values() if s == "compensated")
    return {
        "completed": completed,
        "compensated": compensated,
        "other": len(statuses) - completed - compensated,
        "tickets": len(ticketed),
        "seats_left": int(seats_left),
        # Seats the counter lost (negative: invented): 0 when tickets + seats left = the plane.
        "lost_update": SEATS - len(ticketed) - int(seats_left),
        # Travellers turned away while the plane left with empty seats.
        "turned_away_with_seats_empty": (TRAVELLERS - len(ticketed))
        if len(ticketed) < SEATS
        else 0,
        "overbooked": max(0, len(ticketed) - SEATS),
        "same_seat_twice": len(seats_given) - len(set(seats_given)),
        "charged_without_ticket": len(paid_without_ticket),
        "revenue": dollars(sum(net.values())),
    }


#: What the comparison table shows, one row each: (figure, label).
SHOWN = (
    ("tickets", "tickets issued"),
    ("seats_left", "seats left (the counter)"),
    ("lost_update", "seats the counter lost (lost update)"),
    ("turned_away_with_seats_empty", "turned away, seats empty (dirty read)"),
    ("overbooked", "overbooked"),
    ("charged_without_ticket", "charged without a ticket"),
    ("completed", "sagas completed"),
    ("compensated", "sagas compensated"),
)


async def run(directory: Path, *, story: bool) -> dict[str, Any]:
    say = Narrator(story=story)
    say.say(
        f"{TRAVELLERS} travellers want the last {SEATS} seats on {FLIGHT}; "
        "40% of their cards will be declined."
    )
    say.say("First, an airline without countermeasures: read-modify-write, undo by snapshot.")
    naive = await book(directory / "without-countermeasures", careful=False, say=say)
    say.say(
        "Again, with commutative updates, a semantic lock per seat, and a re-read before the pivot."
    )
    careful = await book(directory, careful=True, say=say)
    say.show(
        table(
            f"{TRAVELLERS} sagas, {SEATS} seats",
            ["", "without countermeasures", "with countermeasures"],
            [(label, naive[key], careful[key]) for key, label in SHOWN],
        )
    )
    problems = []
    if not (naive["lost_update"] or naive["turned_away_with_seats_empty"] or naive["overbooked"]):
        problems.append("without countermeasures, neither anomaly showed this time")
    if careful["tickets"] != SEATS or careful["completed"] != SEATS:
        problems.append(f"with countermeasures {careful['tickets']} travellers flew, not {SEATS}")
    if careful["compensated"] != TRAVELLERS - SEATS:
        problems.append(f"with countermeasures {careful['compensated']} sagas were compensated")
    anomalies = ("lost_update", "turned_away_with_seats_empty", "overbooked", "same_seat_twice")
    problems.extend(
        f"with countermeasures: {name.replace('_', ' ')} = {careful[name]}"
        for name in anomalies
        if careful[name]
    )
    if careful["charged_without_ticket"] or careful["seats_left"] != 0:
        problems.append(
            f"with countermeasures: {careful['charged_without_ticket']} charged without a "
            f"ticket, {careful['seats_left']} seats left"
        )
    problems.extend(never_published(naive["unsent_outbox_rows"]))
    problems.extend(never_published(careful["unsent_outbox_rows"]))
    return {
        "seats": SEATS,
        "travellers": TRAVELLERS,
        "without_countermeasures": naive,
        "with_countermeasures": careful,
        "problems": problems,
    }
