"""The ``sagakit`` command line as a user runs it, against real SQLite and PostgreSQL stores.

``sagakit(...)`` runs the installed console script in a subprocess with a wide terminal and
returns what a person would see: the exit code, stdout and stderr. Matrices of options
(filters, unknown ids, bad arguments) go through typer's runner in process, ``cli(...)``,
where a process each would make the file slow; the subprocess tests cover each path once.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import re
import sqlite3
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text

from sagakit import StartRequest, open_store
from sagakit.stores.schema import VERSION_TABLE, metadata
from tests.conftest import PG_ADMIN, create_pg_database, drop_pg_database
from tests.e2e.helpers import (
    TWIN_PREFIX,
    InProcessCli,
    Result,
    World,
    build_world_sync,
    no_traceback,
    run_sagas,
    sagakit,
    sagakit_many,
)
from tests.sagas import ORDER, TRIP

_SAGA_ID = re.compile(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")
_TIMELINE_ROW = re.compile(r"^(\d+)\s+\+[\d.]+(?:ms|s|m)\s+(\w+)", re.MULTILINE)


def shown(output: str) -> set[str]:
    """The saga ids in a `sagakit list` table (whole: two ids that differ only at the
    end must not look the same)."""
    return set(_SAGA_ID.findall(output))


def short(ids: set[str]) -> set[str]:
    return set(ids)


def timeline(output: str) -> list[tuple[int, str]]:
    """``(position, event type)`` for every row of a `sagakit show` timeline."""
    return [(int(seq), kind) for seq, kind in _TIMELINE_ROW.findall(output)]


def succeeded(result: Result) -> None:
    """Exit 0 and nothing on stderr: no warning, no stray log line, no traceback."""
    assert result.code == 0, result
    assert result.err == "", result


def line_with(output: str, pattern: str) -> str:
    [line] = [line for line in output.splitlines() if re.search(pattern, line)]
    return line


def in_the_store(statuses: Mapping[str, int]) -> str:
    """The summary under the list table: every status in the store with its count."""
    return ", ".join(f"{name} {count}" for name, count in sorted(statuses.items()) if count)


async def migrated(url: str) -> bool:
    store = open_store(url)
    try:
        return await store.is_migrated()
    finally:
        await store.close()


#: The tables `sagakit migrate` creates: the schema's and the migrations' version table.
SAGAKIT_TABLES = {*metadata.tables, VERSION_TABLE}


async def sagakit_tables(url: str) -> set[str]:
    """Which of sagakit's tables the database holds, asked of the database itself.

    Not through a store: opening an embedded store may migrate it on first use.
    """
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(url.split(":///", 1)[1])) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            return SAGAKIT_TABLES & {row[0] for row in rows}
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return SAGAKIT_TABLES & {row["tablename"] for row in rows}
    finally:
        await conn.close()


async def migrate(url: str) -> None:
    store = open_store(url)
    try:
        await store.migrate()
    finally:
        await store.close()


async def execute(url: str, sql: str, **params: object) -> None:
    store = open_store(url)
    try:
        async with store.engine.begin() as conn:
            result = await conn.execute(text(sql), params)
            assert result.rowcount == 1
    finally:
        await store.close()


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> InProcessCli:
    # The CLI's consoles sized themselves at import; give them the subprocesses' width.
    module = importlib.import_module("sagakit.cli.app")
    monkeypatch.setattr(module.console, "width", 200)
    monkeypatch.setattr(module.errors, "width", 200)
    return InProcessCli()


# ---------------------------------------------------------------------------- stores with sagas


@pytest.fixture(scope="module")
def sqlite_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world_sync(f"sqlite:///{tmp_path_factory.mktemp('world')}/sagas.db")


@pytest.fixture(scope="module")
def postgres_world() -> Iterator[World]:
    url = asyncio.run(create_pg_database())
    try:
        yield build_world_sync(url)
    finally:
        asyncio.run(drop_pg_database(url))


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def world(request: pytest.FixtureRequest) -> World:
    """Nine sagas that really ran: orders and trips, completed and compensated, one old."""
    found: World = request.getfixturevalue(f"{request.param}_world")
    return found


# ---------------------------------------------------------------------------- migrate


def test_migrate_creates_the_tables_and_is_idempotent(store_url: str) -> None:
    assert asyncio.run(sagakit_tables(store_url)) == set()

    first = sagakit("migrate", "--db", store_url)
    again = sagakit("migrate", "--db", store_url)

    for result in (first, again):
        succeeded(result)
        assert result.out.startswith("migrated "), result
    assert asyncio.run(sagakit_tables(store_url)) == SAGAKIT_TABLES
    assert asyncio.run(migrated(store_url))


# ---------------------------------------------------------------------------- list


def test_list_shows_every_saga_with_its_definition_key_and_status(world: World) -> None:
    result = sagakit("list", "--db", world.url)

    succeeded(result)
    assert shown(result.out) == short(set(world.statuses))
    for key, saga_id in world.ids.items():
        row = line_with(result.out, saga_id)
        assert f"{world.definitions[saga_id]}@1" in row
        assert key in row
        assert world.statuses[saga_id] in row
    assert "payment.charge refused on purpose" in line_with(result.out, world.ids["order-4"])
    total = len(world.statuses)
    assert f"{total} shown; in the store: {in_the_store(Counter(world.statuses.values()))}" in (
        result.out
    )


def test_the_store_url_can_come_from_the_environment(cli: InProcessCli, world: World) -> None:
    result = cli("list", env={"SAGAKIT_DB": world.url})

    assert result.code == 0, result
    assert shown(result.out) == short(set(world.statuses))


def listed(cli: InProcessCli, world: World, *options: str) -> set[str]:
    """The short ids `sagakit list OPTIONS` shows; it must succeed either way."""
    result = cli("list", "--db", world.url, *options)
    assert result.code == 0, result
    if not shown(result.out):
        assert result.out.strip() == "no sagas match", result
    return shown(result.out)


def test_list_filters_by_status_definition_and_key(cli: InProcessCli, world: World) -> None:
    compensated = world.where(status="compensated")
    assert compensated  # the world holds both outcomes, so the filters have work to do
    assert listed(cli, world, "--status", "compensated") == short(compensated)
    assert listed(cli, world, "-s", "completed") == short(world.where(status="completed"))
    assert listed(cli, world, "--definition", "trip") == short(world.where(definition="trip"))
    assert listed(cli, world, "-d", "order", "-s", "compensated") == short(
        world.where(definition="order", status="compensated")
    )
    assert listed(cli, world, "--key", "order-4") == short(world.keyed("order-4"))
    assert listed(cli, world, "--key", "no-such-key") == set()
    assert listed(cli, world, "--definition", "no-such-saga") == set()
    assert listed(cli, world, "--status", "needs_attention") == set()


def test_list_since_takes_a_duration_or_an_iso_time(cli: InProcessCli, world: World) -> None:
    everything = short(set(world.statuses))
    recent = everything - short(world.old)  # the old saga's clock read three days ago
    now = datetime.now(UTC)
    naive_utc = (now - timedelta(days=2)).replace(tzinfo=None).isoformat(timespec="seconds")
    in_tokyo = (now - timedelta(days=4)).astimezone(timezone(timedelta(hours=9))).isoformat()
    tomorrow = (now + timedelta(days=1)).date().isoformat()

    assert listed(cli, world, "--since", "1h") == recent
    assert listed(cli, world, "--since", "90m") == recent
    assert listed(cli, world, "--since", "2d") == recent
    assert listed(cli, world, "--since", "4d") == everything
    assert listed(cli, world, "--since", naive_utc) == recent
    assert listed(cli, world, "--since", in_tokyo) == everything
    assert listed(cli, world, "--since", tomorrow) == set()
    assert listed(cli, world, "--since", "1h", "-s", "completed", "-d", "order") == short(
        world.where(status="completed", definition="order") - world.old
    )


def test_list_limit_shows_the_newest_sagas(cli: InProcessCli, world: World) -> None:
    result = cli("list", "--db", world.url, "--limit", "2")

    assert result.code == 0, result
    rows = shown(result.out)
    assert len(rows) == 2
    assert rows <= short(world.where(definition="trip"))  # the trips ran after the orders
    assert f"2 shown; in the store: {in_the_store(Counter(world.statuses.values()))}" in (
        result.out
    )


def test_list_on_an_empty_store_says_no_sagas_match(cli: InProcessCli, store_url: str) -> None:
    asyncio.run(migrate(store_url))

    result = cli("list", "--db", store_url)

    assert result.code == 0, result
    assert result.out.strip() == "no sagas match"


@pytest.mark.postgres
def test_an_unmigrated_postgres_database_is_a_clear_error(cli: InProcessCli, pg_url: str) -> None:
    listing, showing = sagakit("list", "--db", pg_url), cli("show", "abc123", "--db", pg_url)

    for result in (listing, showing):
        assert result.code == 1, result
        assert "no sagakit tables" in result.err, result
        assert "sagakit migrate" in result.err, result
        no_traceback(result)
    assert asyncio.run(sagakit_tables(pg_url)) == set()  # reading never creates tables


# ---------------------------------------------------------------------------- show


def test_show_tells_the_story_of_a_completed_saga(world: World) -> None:
    saga_id = world.ids["order-3"]

    result = sagakit("show", saga_id, "--db", world.url)

    succeeded(result)
    head = result.out.splitlines()[0]
    assert head.startswith(f"saga {saga_id}")
    for part in ("order v1", "key order-3", "completed"):
        assert part in head
    rows = timeline(result.out)
    assert [seq for seq, _ in rows] == list(range(1, len(rows) + 1))
    assert rows[0][1] == "SagaStarted"
    assert rows[-1][1] == "SagaCompleted"
    kinds = [kind for _, kind in rows]
    assert kinds.count("StepRequested") == kinds.count("StepSucceeded") == len(ORDER.steps)
    for step in ORDER.steps:
        assert f"{step.name}: succeeded" in result.out


def test_show_tells_the_story_of_a_compensated_saga(cli: InProcessCli, world: World) -> None:
    saga_id = world.ids["trip-3"]  # the car was refused once the flight and hotel were booked

    result = cli("show", saga_id, "--db", world.url)

    succeeded(result)
    head = result.out.splitlines()[0]
    for part in ("trip v1", "compensated", "cars.rent refused on purpose"):
        assert part in head
    kinds = [kind for _, kind in timeline(result.out)]
    assert kinds[0] == "SagaStarted"
    assert kinds[-1] == "SagaCompensated"
    for kind in ("StepFailed", "CompensationStarted", "CompensationRequested", "StepCompensated"):
        assert kind in kinds
    assert "SagaCompleted" not in kinds
    assert "car: failed (cars.rent refused on purpose)" in result.out
    for step in (s for s in TRIP.steps if s.compensation and s.name != "car"):
        assert f"{step.name}: compensated" in result.out


def shortest_unique_start(saga_id: str, world: World) -> str:
    for length in range(1, len(saga_id) + 1):
        start = saga_id[:length]
        if sum(other.startswith(start) for other in world.statuses) == 1:
            return start
    return saga_id


@pytest.mark.parametrize("key", ["order-4", "order-1"])  # order-1 shares 8 characters
def test_show_accepts_the_id_from_the_list_or_any_unique_start(
    cli: InProcessCli, world: World, key: str
) -> None:
    saga_id = world.ids[key]
    full = cli("show", saga_id, "--db", world.url)
    assert full.code == 0, full

    for start in (saga_id, shortest_unique_start(saga_id, world)):
        by_start = cli("show", start, "--db", world.url)
        assert by_start.code == 0, by_start
        assert by_start.out.splitlines()[0] == full.out.splitlines()[0]
        assert timeline(by_start.out) == timeline(full.out)


@pytest.mark.parametrize("wanted", ["nosuchsaga", "%", "_", "ffff%", " "])
def test_show_an_unknown_id_says_so(cli: InProcessCli, world: World, wanted: str) -> None:
    result = cli("show", wanted, "--db", world.url)

    assert result.code == 1, result
    assert f"no saga with id {wanted!r}" in result.err, result


def test_show_an_ambiguous_start_asks_for_more(cli: InProcessCli, world: World) -> None:
    result = cli("show", TWIN_PREFIX, "--db", world.url)  # order-1 and order-2 share it

    assert result.code == 1, result
    assert "several saga ids" in result.err, result


def test_show_an_unknown_id_from_the_script(sqlite_world: World) -> None:
    result = sagakit("show", "nosuchsaga", "--db", sqlite_world.url)

    assert result.code == 1, result
    assert result.err.startswith("error: no saga with id 'nosuchsaga'"), result
    no_traceback(result)


# ---------------------------------------------------------------------------- a corrupted log


def test_show_marks_an_unreadable_event_and_exits_2(cli: InProcessCli, store_url: str) -> None:
    asyncio.run(migrate(store_url))
    requests = [StartRequest("order", {}, key=k) for k in ("teleported", "garbled")]
    teleported, garbled = run_sagas(store_url, requests)
    damage = "UPDATE saga_events SET {} WHERE saga_id = :id AND seq = 3"
    asyncio.run(execute(store_url, damage.format("type = 'Teleported'"), id=teleported))
    asyncio.run(execute(store_url, damage.format("data = '{not json'"), id=garbled))

    # One through the script, for the exit code a shell sees; the other in process.
    from_script = sagakit("show", teleported, "--db", store_url)
    results = [from_script, cli("show", garbled, "--db", store_url)]

    reasons = ["unknown event type 'Teleported'", "data is not JSON"]
    for result, reason in zip(results, reasons, strict=True):
        assert result.code == 2, result
        no_traceback(result)
        rows = dict(timeline(result.out))
        assert rows[1] == "SagaStarted"  # the readable events are still there around it
        assert rows[max(rows)] == "SagaCompleted"
        assert f"unreadable: {reason}" in line_with(result.out, r"^3\s+\+")
        assert f"event at position 3 is unreadable: {reason}" in result.out
    # The list reads the projection, so the damaged sagas are still there to find.
    assert shown(cli("list", "--db", store_url).out) == short({teleported, garbled})


# ---------------------------------------------------------------------------- bad arguments

BAD_ARGUMENTS = [
    (["frobnicate"], "No such command 'frobnicate'"),
    (["list", "--nope"], "No such option: --nope"),
    (["show"], "Missing argument"),
    (["list", "--status", "bogus"], "'bogus' is not one of"),
    (["list", "--limit", "0"], "--limit"),
    (["list", "--limit", "many"], "--limit"),
    (["list", "--since", "yesterday"], "'yesterday' is neither a duration"),
    (["demo", "--orders", "0"], "--orders"),
    (["demo", "--mode", "telepathy"], "--mode"),
    (["list", "--db", "mysql://x"], "unsupported store URL 'mysql://x'"),
    (["show", "abc", "--db", "mysql://x"], "unsupported store URL 'mysql://x'"),
    (["migrate", "--db", "mysql://x"], "unsupported store URL 'mysql://x'"),
    (["list", "--db", "sqlite://"], "needs a file path"),
]


def usage_error(result: Result, message: str) -> None:
    assert result.code == 2, result
    assert message in result.err, result
    assert result.out == "", result
    no_traceback(result)


@pytest.mark.parametrize(("args", "message"), BAD_ARGUMENTS)
def test_bad_arguments_are_usage_errors(
    cli: InProcessCli,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)

    usage_error(cli(*args), message)

    assert list(tmp_path.iterdir()) == []  # nothing was created by a command that never ran


def test_bad_arguments_from_the_script(tmp_path: Path) -> None:
    cases = [BAD_ARGUMENTS[0], BAD_ARGUMENTS[8]]

    results = sagakit_many(*(args for args, _ in cases), cwd=tmp_path)

    for result, (_, message) in zip(results, cases, strict=True):
        usage_error(result, message)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- stores out of reach


def out_of_reach(tmp_path: Path, case: str) -> list[str]:
    no_database = PG_ADMIN.rsplit("/", 1)[0] + "/sagakit_no_such_database"
    return {
        "server down": ["list", "--db", "postgresql://postgres:hunter2@127.0.0.1:1/sagas"],
        "no such database": ["migrate", "--db", no_database],
        "sqlite path is a directory": ["show", "abc", "--db", f"sqlite:///{tmp_path}"],
    }[case]


@pytest.mark.parametrize("case", ["server down", "no such database", "sqlite path is a directory"])
def test_a_store_that_cannot_be_opened_is_a_clear_error(tmp_path: Path, case: str) -> None:
    result = sagakit(*out_of_reach(tmp_path, case))

    assert result.code == 1, result
    assert result.err.startswith("error:"), result
    no_traceback(result)
    assert "hunter2" not in result.output  # never print the password
