"""The CLI at its edges: text from elsewhere printed as written, output scripts can
read, errors on one line, and actions that say when nobody will act on them."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sagakit import Orchestrator, Participant, StepContext, StepRejected, open_store
from sagakit.model.messages import TransportMessage
from sagakit.stores.dead_letters import SqlDeadLetters
from sagakit.testing import SagaHarness
from tests.e2e.helpers import Result, sagakit
from tests.sagas import CHECKOUT

#: What a participant's (or an outside service's) error text may hold.
MARKUP = "bad [/] note [link=https://evil.example]click[/link] \x1b[31mred\x00"
SHOWN = r"bad [/] note [link=https://evil.example]click[/link] \x1b[31mred\x00"


@dataclass
class Store:
    url: str
    harness: SagaHarness


async def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return await asyncio.to_thread(sagakit, *args, env=env)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    harness = SagaHarness([CHECKOUT], directory=tmp_path)
    dead = SqlDeadLetters(harness.store)
    harness.memory._dead_letters = dead  # the embedded dead-letter queue, as the demo wires it
    fraud = Participant("fraud", harness.store, clock=harness.clock)

    @fraud.command("screen")
    async def screen(ctx: StepContext) -> None:
        raise StepRejected(MARKUP)

    @fraud.command("clear")
    async def clear(ctx: StepContext) -> None:
        """Nothing to undo."""

    harness.add(fraud, Participant("payment", harness.store, clock=harness.clock))
    async with harness as h:
        for saga_id in ("1d0c5a", "1d0c5b", "2e00"):
            await h.start("checkout", {"vip": False, "amount": 5}, saga_id=saga_id)
        await h.run_until_terminal(["1d0c5a", "1d0c5b", "2e00"])
        junk = TransportMessage(
            "sagakit.commands.payment", "junk-1", b"{not json", {"type": MARKUP}
        )
        await asyncio.wait_for(h.memory.publish([junk]), 5)
        yield Store(h.store.url, h)


async def test_text_from_elsewhere_is_printed_as_written_never_as_markup(store: Store) -> None:
    listed = await cli("list", "--db", store.url)
    assert listed.code == 0, listed
    assert SHOWN in listed.out
    assert "\x1b]8;" not in listed.out and "\x1b[31m" not in listed.out  # no link, no colour
    shown = await cli("show", "1d0c5a", "--db", store.url)
    assert shown.code == 0 and SHOWN in shown.out, shown
    letters = await cli("dlq", "list", "--db", store.url)
    assert letters.code == 0 and SHOWN[:40] in letters.out, letters
    letter_id = json.loads((await cli("dlq", "list", "--db", store.url, "--json")).out)
    one = await cli("dlq", "show", letter_id["items"][0]["id"], "--db", store.url)
    assert one.code == 0 and SHOWN in one.out, one


async def test_list_show_and_dlq_list_print_json_with_whole_ids_and_iso_times(
    store: Store,
) -> None:
    listed = json.loads((await cli("list", "--db", store.url, "--json")).out)
    assert {row["saga_id"] for row in listed["items"]} == {"1d0c5a", "1d0c5b", "2e00"}
    assert all(re.match(r"\d{4}-\d\d-\d\dT", row["updated_at"]) for row in listed["items"])
    assert listed["counts"] == {"compensated": 3}
    shown = json.loads((await cli("show", "2e00", "--db", store.url, "--json")).out)
    assert shown["saga"]["status"] == "compensated" and MARKUP in shown["saga"]["reason"]
    assert shown["events"][0]["type"] == "SagaStarted"
    letters = json.loads((await cli("dlq", "list", "--db", store.url, "--json")).out)
    assert letters["depth"] == 1 and letters["items"][0]["headers"]["type"] == MARKUP
    breakers = json.loads((await cli("breakers", "--db", store.url, "--json")).out)
    assert breakers == {"items": []}
    table = await cli("list", "--db", store.url)
    assert "1d0c5a" in table.out and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", table.out)


async def test_an_ambiguous_start_lists_the_ids_it_matches(store: Store) -> None:
    result = await cli("show", "1d0c", "--db", store.url)
    assert result.code == 1
    assert "1d0c5a" in result.err and "1d0c5b" in result.err
    assert len(result.err.strip().splitlines()) == 1


async def test_an_action_with_no_orchestrator_running_says_nobody_will_act(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    saga_store = open_store(url)
    await saga_store.migrate()
    # A saga started by a process that runs no orchestrator (an API taking orders, say).
    await Orchestrator(saga_store, [CHECKOUT]).start("checkout", {"amount": 5}, saga_id="alone")
    await saga_store.close()
    done = await cli("compensate", "alone", "--db", url, "--note", "x", "--wait", "0")
    assert done.code == 3, done
    assert "nobody will act on it" in done.err and "never seen" in done.err
    assert len(done.err.strip().splitlines()) == 1


def test_errors_are_one_line_with_passwords_masked_whatever_the_terminal() -> None:
    broker = "amqp://guest:S3cretPw@127.0.0.1/%2F?max_deliveries=x"
    result = sagakit("dlq", "list", "--broker", broker, env={"COLUMNS": "40"})
    assert result.code == 2, result
    assert "S3cretPw" not in result.output and "guest:***@" in result.err
    assert len(result.err.strip().splitlines()) == 1
    usage = sagakit("list", "--since", "x" * 120, env={"COLUMNS": "40"})
    assert usage.code == 2 and len(usage.err.strip().splitlines()) == 1, usage


def test_a_malformed_tokens_setting_is_refused_without_echoing_it() -> None:
    secret = "S3cretS3cretS3cretS3cret"
    result = sagakit(
        "up", "--db", "postgresql://127.0.0.1:1/nowhere", env={"SAGAKIT_TOKENS": f"op-{secret}"}
    )
    assert result.code == 2, result
    assert "SAGAKIT_TOKENS: item 1 is not role:name:secret" in result.err
    assert secret not in result.output


async def test_actions_from_the_cli_are_on_the_record_and_audit_lists_them(store: Store) -> None:
    note = "bad [/] note \u202e[link=https://evil.example]x[/link]"  # no NUL: an argument
    done = await cli("compensate", "2e00", "--db", store.url, "--note", note, "--who", "ann")
    assert "compensate" in done.output  # refused: the saga has ended; asked all the same
    letters = json.loads((await cli("dlq", "list", "--db", store.url, "--json")).out)
    letter = letters["items"][0]["id"]
    await cli("dlq", "replay", letter, "--db", store.url, "--note", "fixed", "--who", "bo")
    listed = json.loads((await cli("audit", "--db", store.url, "--json")).out)["items"]
    assert [(a["who"], a["action"], a["target"], a["note"], a["via"]) for a in listed] == [
        ("bo", "replay", letter, "fixed", "cli"),
        ("ann", "compensate", "2e00", note, "cli"),
    ]
    table = await cli("audit", "--db", store.url, "--target", "2e00")
    assert table.code == 0 and "bo" not in table.out, table
    assert r"bad [/] note \u202e[link=https://evil.example]x[/link]" in table.out
