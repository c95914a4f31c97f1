"""The admin API's system views, checked against the saga logs the sagas really wrote:
outcomes over time, latency percentiles, failure groups and the searches they link to,
one saga's timeline with its data, definitions, backlog samples and bulk actions."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from sagakit import Participant, StepContext, StepRejected, TransientError
from sagakit.api import AdminConfig, create_admin_app, parse_tokens
from sagakit.api.figures import reason_pattern
from sagakit.engine.rules import RuleSet, publish
from sagakit.model.events import decode
from sagakit.model.messages import TransportMessage
from sagakit.observe import tracing
from sagakit.observe.redaction import MASK, Redaction
from sagakit.stores.dead_letters import SqlDeadLetters
from sagakit.testing import SagaHarness
from tests.sagas import CHECKOUT, CHECKOUT_RULES

OPERATOR = "operator-secret-0123456789"
VIEWER = "viewer-secret-0123456789ab"
TOKENS = parse_tokens(f"operator:alice:{OPERATOR}, viewer:bob:{VIEWER}")
#: How long each command takes, on the harness's clock: latencies are known.
TAKES = {"screen": 0.1, "charge": 0.3, "ship": 0.5, "clear": 0.05, "refund": 0.07}


def headers(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


World = tuple[SagaHarness, httpx.AsyncClient]


@pytest.fixture(scope="module", autouse=True)
def _trace_ids() -> None:
    # The OpenTelemetry provider is set once per process; without one no trace id exists.
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())


@pytest.fixture
async def world() -> AsyncIterator[World]:
    # ten minutes ago: the handlers move the clock on, and it stays inside every window
    harness = SagaHarness([CHECKOUT], start_time=time.time() - 600)
    dead = SqlDeadLetters(harness.store)
    harness.memory._dead_letters = dead
    for name, commands in {
        "fraud": ("screen", "clear"),
        "payment": ("charge", "refund"),
        "shipping": ("ship",),
    }.items():
        participant = Participant(name, harness.store, clock=harness.clock)
        for command in commands:
            participant.on(command, _handler(harness, command))
        harness.add(participant)
    async with harness as h:
        async with h.store.unit() as unit:
            await publish(unit, RuleSet.parse(CHECKOUT_RULES, definition=CHECKOUT))
        app = create_admin_app(
            AdminConfig(
                saga_store=h.store,
                definitions=[CHECKOUT],
                tokens=TOKENS,
                dead_letters=dead,
                trace_url="https://traces.example/trace/{trace_id}",
                sample_every=0.05,
            )
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://admin"
        ) as client:
            yield h, client


def _handler(h: SagaHarness, command: str) -> Any:
    async def handle(ctx: StepContext) -> dict[str, Any]:
        h.clock.advance(TAKES[command])
        if command == "charge" and ctx.payload.get("flaky") and ctx.attempt == 1:
            raise TransientError("the card network is busy")
        if command == "ship" and ctx.payload.get("far"):
            raise StepRejected(f"we do not ship to zone {ctx.payload['zone']}")
        return {f"{command}_ref": f"{command}-{ctx.payload['n']}"}

    return handle


async def run_orders(h: SagaHarness, good: int, far: int) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {"completed": [], "compensated": []}
    for n in range(good + far):
        bad = n >= good
        data = {"vip": False, "amount": 10, "n": n, "far": bad, "zone": 40 + n}
        saga_id = await h.start("checkout", data, saga_id=f"s{n}", key=f"order-{100 + n}")
        ids["compensated" if bad else "completed"].append(saga_id)
    ended = await h.run_until_terminal([s for found in ids.values() for s in found])
    assert sorted(s.status.value for s in ended.values()) == sorted(
        k for k, v in ids.items() for _ in v
    )
    return ids


async def get(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    answer = await client.get(path, params=params, headers=headers(VIEWER))
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_outcomes_per_interval_are_the_logs_counts(world: World) -> None:
    h, client = world
    ids = await run_orders(h, good=3, far=2)
    found = await get(client, "/api/insights/outcomes", window="15m")
    assert found["every_s"] == 30 and len(found["at"]) == 30
    assert found["at"][0] == found["since"] and found["until"] == found["since"] + 900
    expected = {name: [0] * 30 for name in found["series"]}
    names = {"SagaStarted": "started", "SagaCompleted": "completed"}
    names["SagaCompensated"] = "compensated"
    for saga_id in ids["completed"] + ids["compensated"]:
        for stored in await h.history(saga_id):
            if stored.type in names:
                slot = math.floor((stored.recorded_at - found["since"]) / 30)
                expected[names[stored.type]][slot] += 1
    assert found["series"] == expected
    assert sum(found["series"]["started"]) == 5 and sum(found["series"]["compensated"]) == 2
    refused = await client.get("/api/insights/outcomes?window=7d", headers=headers(VIEWER))
    assert refused.status_code == 422


def nearest_rank(values: list[float], p: int) -> float:
    return sorted(values)[math.ceil(p / 100 * len(values)) - 1]


async def test_latency_percentiles_are_those_of_the_logged_tries(world: World) -> None:
    h, client = world
    ids = await run_orders(h, good=4, far=1)
    tries: dict[tuple[str, str], list[float]] = {}
    durations = []
    for saga_id in ids["completed"] + ids["compensated"]:
        history = await h.history(saga_id)
        # to the event that ended it: a late duplicate's ReplyIgnored may follow the end
        end = next(e for e in history if e.type in {"SagaCompleted", "SagaCompensated"})
        durations.append(end.recorded_at - history[0].recorded_at)
        asked: dict[tuple[str, str], float] = {}
        for stored in history:
            event = decode(stored)
            step = getattr(event, "step", None)
            if stored.type in {"StepRequested", "CompensationRequested"}:
                op = "action" if stored.type == "StepRequested" else "compensation"
                asked[(step, op)] = stored.recorded_at
            elif stored.type in {"StepSucceeded", "StepFailed", "StepCompensated"}:
                op = "compensation" if stored.type == "StepCompensated" else "action"
                tries.setdefault((step, op), []).append(stored.recorded_at - asked.pop((step, op)))
    found = await get(client, "/api/insights/latency", window="1h")
    assert found["all_read"] is True
    shown = {(s["step"], s["op"]): s for s in found["steps"]}
    assert set(shown) == set(tries)
    for key, values in tries.items():
        for p in (50, 95, 99):
            assert shown[key][f"p{p}"] == pytest.approx(nearest_rank(values, p))
        assert shown[key]["count"] == len(values)
    assert shown[("charge", "action")]["participant"] == "payment"
    actions = [s["step"] for s in found["steps"] if s["op"] == "action"]
    assert actions == ["screen", "charge", "ship"]  # in the definition's order
    assert found["saga"]["count"] == 5
    assert found["saga"]["p99"] == pytest.approx(max(durations))


async def test_failures_are_grouped_by_step_and_pattern_and_link_to_their_sagas(
    world: World,
) -> None:
    h, client = world
    ids = await run_orders(h, good=1, far=3)
    found = await get(client, "/api/insights/failures", window="1h")
    [group] = found["items"]
    assert group["step"] == "ship" and group["count"] == 3
    assert group["pattern"] == "ship failed: we do not ship to zone *"
    assert group["example"].startswith("ship failed: we do not ship to zone 4")
    linked = await get(client, "/api/search", **group["search"])
    assert {r["saga_id"] for r in linked["items"]} == set(ids["compensated"])
    assert linked["total"] == 3


def test_reason_patterns_keep_the_words_and_lose_what_differs() -> None:
    assert reason_pattern("card declined for $8.50") == "card declined for $*"
    assert reason_pattern("card declined for $12.00") == "card declined for $*"
    assert reason_pattern("no 'lamp' left (wanted 3, have 1)") == "no * left (wanted *, have *)"
    assert reason_pattern("auth auth_d3c2e8916abd40b2 refused") == "auth * refused"


async def test_search_by_key_reason_step_version_and_by_duration(world: World) -> None:
    h, client = world
    await run_orders(h, good=2, far=2)
    keys = [r["key"] for r in (await get(client, "/api/search", key="order-10*"))["items"]]
    assert sorted(keys) == ["order-100", "order-101", "order-102", "order-103"]
    by_reason = await get(client, "/api/search", reason="ZONE 43")
    assert [r["key"] for r in by_reason["items"]] == ["order-103"]
    at_ship = await get(client, "/api/search", step="ship", status="compensated")
    assert sorted(r["key"] for r in at_ship["items"]) == ["order-102", "order-103"]
    assert (await get(client, "/api/search", definition="checkout", version=2))["total"] == 0
    longest = (await get(client, "/api/search", sort="duration"))["items"]
    spans = [r["updated_at"] - r["created_at"] for r in longest]
    assert spans == sorted(spans, reverse=True) and len(spans) == 4
    bad = await client.get("/api/search?sort=random", headers=headers(VIEWER))
    assert bad.status_code == 422
    assert (await client.get("/api/search")).status_code == 401


async def test_a_timeline_draws_each_try_at_its_logged_times_with_its_data(world: World) -> None:
    h, client = world
    ids = await run_orders(h, good=0, far=1)
    [saga_id] = ids["compensated"]
    found = await get(client, f"/api/sagas/{saga_id}/timeline")
    history = {e.seq: e for e in await h.history(saga_id)}
    assert found["saga"]["status"] == "compensated" and found["status"] == "compensated"
    assert found["pivot"] == "ship" and found["rules_version"] == 1
    assert found["trace_id"] == tracing.trace_id(decode(history[1]).traceparent)  # type: ignore[attr-defined]
    assert found["trace_url"] == f"https://traces.example/trace/{found['trace_id']}"
    bars = [(b["step"], b["op"], b["outcome"]) for b in found["bars"]]
    assert bars == [
        ("screen", "action", "succeeded"),
        ("charge", "action", "succeeded"),
        ("ship", "action", "failed"),
        ("charge", "compensation", "compensated"),
        ("screen", "compensation", "compensated"),
    ]
    for bar in found["bars"]:
        assert bar["start"] == history[bar["start_seq"]].recorded_at
        assert bar["end"] == history[bar["end_seq"]].recorded_at
        assert bar["end"] - bar["start"] == pytest.approx(TAKES[_command(bar)], abs=0.001)
    screen, charge, ship, refund, _ = found["bars"]
    assert screen["input"] == found["data"]["initial"]  # the first step gets what started it
    assert charge["participant"] == "payment" and ship["kind"] == "pivot"
    assert charge["input"] == {**found["data"]["initial"], "screen_ref": "screen-0"}
    assert charge["reply"] == {"charge_ref": "charge-0"}
    assert charge["data_after"] == {**charge["input"], "charge_ref": "charge-0"}
    assert ship["reason"] == "we do not ship to zone 40" and ship["reply"]["retryable"] is False
    assert refund["input"]["_reason"] == "ship failed: we do not ship to zone 40"
    assert [m["type"] for m in found["marks"]] == [
        "SagaStarted",
        "StepSkipped",  # no approval for a small order
        "CompensationStarted",
        "SagaCompensated",
    ]
    assert found["ended_at"] == found["marks"][-1]["at"]
    missing = await client.get("/api/sagas/nope/timeline", headers=headers(VIEWER))
    assert missing.status_code == 404


async def test_a_retry_is_drawn_as_a_failed_try_its_wait_and_the_next_try(
    world: World,
) -> None:
    h, client = world
    data = {"vip": False, "amount": 10, "n": 7, "far": False, "zone": 40, "flaky": True}
    saga_id = await h.start("checkout", data, saga_id="flaky", key="order-flaky")
    ended = await h.run_until_terminal([saga_id])
    assert ended[saga_id].status.value == "completed"
    found = await get(client, f"/api/sagas/{saga_id}/timeline")
    history = await h.history(saga_id)
    charges = [b for b in found["bars"] if b["step"] == "charge"]
    assert [(b["attempt"], b["outcome"]) for b in charges] == [(1, "failed"), (2, "succeeded")]
    assert charges[0]["reason"] == "the card network is busy"
    [wait] = found["waits"]
    scheduled = next(e for e in history if e.type == "RetryScheduled")
    assert wait["step"] == "charge" and wait["op"] == "action" and wait["attempt"] == 2
    assert wait["start"] == scheduled.recorded_at
    assert wait["due"] == decode(scheduled).due_at  # type: ignore[attr-defined]
    # the wait ends where the next try begins: the gap on the time axis is the backoff
    assert wait["end"] == charges[1]["start"] >= wait["due"]
    assert charges[0]["end"] <= wait["start"] <= charges[1]["start"]


def _command(bar: dict[str, Any]) -> str:
    if bar["op"] == "action":
        return str(bar["step"])
    return {"screen": "clear", "charge": "refund"}[bar["step"]]


async def test_every_piece_of_saga_data_shown_goes_through_the_redaction(world: World) -> None:
    h, _ = world
    ids = await run_orders(h, good=1, far=1)
    hidden = Redaction.parse("zone, charge_ref")
    config = AdminConfig(
        saga_store=h.store, definitions=[CHECKOUT], tokens=TOKENS, redaction=hidden
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_admin_app(config)), base_url="http://admin"
    ) as client:
        for saga_id in (*ids["completed"], *ids["compensated"]):
            found = await get(client, f"/api/sagas/{saga_id}/timeline")
            shown = [found["data"]["initial"], found["data"]["final"]]
            for bar in found["bars"]:
                shown += [bar["input"], bar["reply"], bar["data_after"]]
            pieces = [piece for piece in shown if piece is not None]
            assert len(pieces) > 5
            for piece in pieces:  # a named field keeps its place, never its value
                assert piece.get("zone", MASK) == MASK and piece.get("charge_ref", MASK) == MASK
            initial = found["data"]["initial"]
            assert initial["zone"] == MASK and initial["amount"] == 10  # the rest is shown
            [charge] = [b for b in found["bars"] if (b["step"], b["op"]) == ("charge", "action")]
            assert charge["reply"] == {"charge_ref": MASK}


async def test_definitions_show_their_steps_and_counts(world: World) -> None:
    h, client = world
    await run_orders(h, good=2, far=1)
    listed = await get(client, "/api/definitions")
    assert listed["items"] == [
        {
            "name": "checkout",
            "version": 1,
            "known": True,
            "counts": {"completed": 2, "compensated": 1},
            "total": 3,
        }
    ]
    found = await get(client, "/api/definitions/checkout/1")
    stages = [[(s["name"], s["kind"], s["optional"]) for s in stage] for stage in found["stages"]]
    assert stages == [
        [("screen", "compensatable", False)],
        [("manual_approval", "approval", True)],
        [("charge", "compensatable", False)],
        [("ship", "pivot", False)],
    ]
    assert found["stages"][0][0]["compensation"] == "clear"
    assert found["mermaid"] == CHECKOUT.render_mermaid()
    assert (
        await client.get("/api/definitions/checkout/9", headers=headers(VIEWER))
    ).status_code == 404


async def test_backlog_samples_the_dead_letter_depth_and_the_outbox(world: World) -> None:
    h, client = world
    before = await get(client, "/api/insights/backlog", window="15m")
    assert before["dead_letters"][-1] == 0
    junk = TransportMessage("sagakit.commands.payment", "junk-1", b"{not json")
    await asyncio.wait_for(h.memory.publish([junk]), 5)
    await asyncio.sleep(0.1)  # a read takes a sample when the newest is older than 0.05 s
    after = await get(client, "/api/insights/backlog", window="15m")
    assert after["dead_letters"] == [0, 1]
    [store] = after["stores"]
    assert store["store"] == h.store.url_safe and store["unsent"] == [0, 0]
    assert after["sampling_since"] <= after["at"][0]


async def test_operators_act_on_several_sagas_each_on_the_record(world: World) -> None:
    h, client = world
    ids = await run_orders(h, good=2, far=0)
    body = {"saga_ids": [*ids["completed"], "nope"], "note": "batch check"}
    refused = await client.post("/api/bulk/retry", headers=headers(VIEWER), json=body)
    assert refused.status_code == 403
    assert (await client.post("/api/bulk/retry", json=body)).status_code == 401
    # refused: nothing asked of the orchestrator, nothing on the record
    assert (await get(client, "/api/audit"))["items"] == []
    answer = await client.post("/api/bulk/retry", headers=headers(OPERATOR), json=body)
    assert answer.status_code == 202
    assert answer.json() == {"accepted": ids["completed"], "unknown": ["nope"]}
    for _ in range(300):
        said = {
            saga_id: [
                json.loads(e.data)
                for e in await h.history(saga_id)
                if e.type == "OperatorIntervened"
            ]
            for saga_id in ids["completed"]
        }
        if all(said.values()):
            break
        await asyncio.sleep(0.01)
    for records in said.values():  # completed sagas refuse a retry, on the record
        assert [(r["action"], r["who"], r["note"]) for r in records] == [
            ("retry", "alice", "batch check")
        ]
    # and each is on the record of operator actions, as one saga's action is
    audited = (await get(client, "/api/audit"))["items"]
    assert sorted((a["action"], a["target"], a["who"], a["note"], a["via"]) for a in audited) == [
        ("retry", saga_id, "alice", "batch check", "api") for saga_id in sorted(ids["completed"])
    ]
    unnoted = {"saga_ids": ids["completed"]}
    assert (
        await client.post("/api/bulk/resolve", headers=headers(OPERATOR), json=unnoted)
    ).status_code == 422
    many = {"saga_ids": [f"s{n}" for n in range(101)]}
    assert (
        await client.post("/api/bulk/retry", headers=headers(OPERATOR), json=many)
    ).status_code == 422


def test_a_trace_url_must_say_where_the_trace_id_goes() -> None:
    from sagakit.api.app import AdminConfig as Config

    store: Any = None
    for wrong in ("https://traces.example/", "https://x/{trace}", "javascript:{trace_id}"):
        with pytest.raises(ValueError, match="trace_url"):
            Config(saga_store=store, definitions=[], tokens=TOKENS, trace_url=wrong)
    grafana = 'http://grafana/explore?left={"queries":[{"query":"{trace_id}"}]}'
    assert Config(saga_store=store, definitions=[], tokens=TOKENS, trace_url=grafana).trace_url


def test_a_long_backlog_is_thinned_to_its_peaks() -> None:
    from sagakit.api.backlog import Sample, thin

    samples = [Sample(float(t), t % 7, {"s": t / 10}, {"s": t % 3}) for t in range(1000)]
    thinned = thin(samples, most=100)
    assert len(thinned) == 100 and thinned[-1].at == 999.0
    assert thinned[0] == Sample(9.0, 6, {"s": 0.9}, {"s": 2})  # the first ten, at their peaks
    assert thin(samples[:50], most=100) == samples[:50]
