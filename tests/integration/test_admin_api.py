"""The admin API: every access rule, every read, every action, and the live stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from sagakit import Participant, StepContext
from sagakit.api import AdminConfig, create_admin_app, parse_tokens
from sagakit.engine.rules import RuleSet, publish
from sagakit.model.messages import TransportMessage
from sagakit.observe.metrics import Metrics
from sagakit.stores.dead_letters import SqlDeadLetters
from sagakit.stores.sql import SqlSagaStore
from sagakit.testing import SagaHarness
from tests.sagas import CHECKOUT, CHECKOUT_RULES

OPERATOR = "operator-secret-0123456789"
VIEWER = "viewer-secret-0123456789ab"
TOKENS = parse_tokens(f"operator:alice:{OPERATOR}, viewer:bob:{VIEWER}")


async def outbox_drained(store: SqlSagaStore, within: float = 10.0) -> None:
    """Wait until every outbox row is marked sent: a publish on commit marks its rows
    a moment after the transport confirmed them."""
    deadline = asyncio.get_running_loop().time() + within
    while await store.unsent_count():
        assert asyncio.get_running_loop().time() < deadline, "the outbox did not drain"
        await asyncio.sleep(0.01)


def headers(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def world() -> AsyncIterator[tuple[SagaHarness, httpx.AsyncClient, Metrics]]:
    harness = SagaHarness([CHECKOUT])
    dead = SqlDeadLetters(harness.store)
    harness.memory._dead_letters = dead  # the embedded dead-letter queue, as the demo wires it
    for name, commands in {
        "fraud": ("screen", "clear"),
        "payment": ("charge", "refund"),
        "shipping": ("ship",),
    }.items():
        participant = Participant(name, harness.store, clock=harness.clock)
        for command in commands:

            async def handler(ctx: StepContext) -> None:
                if ctx.payload.get("far") and ctx.step == "ship":
                    from sagakit import StepRejected

                    raise StepRejected("we do not ship there")

            participant.on(command, handler)
        harness.add(participant)
    metrics = Metrics()
    harness.orchestrator.metrics = metrics
    async with harness as h:
        async with h.store.unit() as unit:
            await publish(unit, RuleSet.parse(CHECKOUT_RULES, definition=CHECKOUT))
        app = create_admin_app(
            AdminConfig(
                saga_store=h.store,
                definitions=[CHECKOUT],
                tokens=TOKENS,
                dead_letters=dead,
                metrics=metrics,
                poll=0.05,
            )
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://admin"
        ) as client:
            yield h, client, metrics


async def test_every_request_needs_a_token_and_only_operators_act(
    world: tuple[SagaHarness, httpx.AsyncClient, Metrics],
) -> None:
    h, client, _ = world
    saga_id = await h.start("checkout", {"vip": True, "amount": 10}, saga_id="s1")
    await h.run_until_terminal([saga_id])
    for path in ("/api/me", "/api/sagas", "/api/stats", "/metrics", "/api/sagas/s1"):
        assert (await client.get(path)).status_code == 401
        wrong = await client.get(path, headers=headers("not-the-token-at-all"))
        assert wrong.status_code == 401
        assert (await client.get(path, headers=headers(VIEWER))).status_code == 200
    assert (await client.get("/api/me", headers=headers(VIEWER))).json() == {
        "name": "bob",
        "role": "viewer",
    }
    await outbox_drained(h.store)  # what the saga's own run sent is marked sent
    refused = await client.post("/api/sagas/s1/compensate", headers=headers(VIEWER), json={})
    assert refused.status_code == 403
    nobody = await client.post("/api/sagas/s1/compensate", json={})
    assert nobody.status_code == 401
    assert await h.store.unsent_count() == 0  # neither queued anything
    types = [e.type for e in await h.history(saga_id)]
    assert "OperatorIntervened" not in types


async def test_reads(world: tuple[SagaHarness, httpx.AsyncClient, Metrics]) -> None:
    h, client, _ = world
    ok = await h.start("checkout", {"vip": True, "amount": 10}, saga_id="ok", key="order-1")
    bad = await h.start(
        "checkout", {"vip": True, "amount": 10, "far": True}, saga_id="bad", key="order-2"
    )
    await h.run_until_terminal([ok, bad])
    listed = (await client.get("/api/sagas", headers=headers(VIEWER))).json()
    assert listed["total"] == 2 and {r["saga_id"] for r in listed["items"]} == {"ok", "bad"}
    only = (await client.get("/api/sagas?status=compensated", headers=headers(VIEWER))).json()
    assert [r["key"] for r in only["items"]] == ["order-2"] and only["total"] == 1
    by_key = (await client.get("/api/sagas?key=order-1", headers=headers(VIEWER))).json()
    assert [r["saga_id"] for r in by_key["items"]] == ["ok"]
    page = (await client.get("/api/sagas?limit=1&offset=1", headers=headers(VIEWER))).json()
    assert len(page["items"]) == 1 and page["total"] == 2
    assert (await client.get("/api/sagas?limit=0", headers=headers(VIEWER))).status_code == 422
    assert (await client.get("/api/sagas?status=bogus", headers=headers(VIEWER))).status_code == 422
    detail = (await client.get("/api/sagas/bad", headers=headers(VIEWER))).json()
    assert detail["saga"]["status"] == "compensated"
    outcomes = {e["type"]: e["outcome"] for e in detail["events"]}
    assert outcomes["StepFailed"] == "failed" and outcomes["StepCompensated"] == "undo"
    failed = next(e for e in detail["events"] if e["type"] == "StepFailed")
    assert (failed["step"], failed["participant"]) == ("ship", "shipping")
    assert failed["text"] == "ship: failed (we do not ship there)"
    assert detail["events"][0]["elapsed_ms"] == 0
    assert (await client.get("/api/sagas/nope", headers=headers(VIEWER))).status_code == 404
    stats = (await client.get("/api/stats", headers=headers(VIEWER))).json()
    assert stats["sagas"] == {"completed": 1, "compensated": 1} and stats["in_flight"] == 0
    outbox = (await client.get("/api/outbox", headers=headers(VIEWER))).json()
    assert outbox["items"][0]["unsent"] == 0
    text = (await client.get("/metrics", headers=headers(VIEWER))).text
    assert 'sagakit_sagas_started_total{definition="checkout"} 2.0' in text
    assert 'sagakit_sagas_finished_total{definition="checkout",outcome="compensated"} 1.0' in text
    assert "sagakit_step_seconds_bucket" in text and "sagakit_outbox_lag_seconds" in text
    spec = (await client.get("/api/openapi.json")).json()
    assert "/api/sagas/{saga_id}/resolve" in spec["paths"]


async def test_operators_act_and_the_log_says_who_and_why(
    world: tuple[SagaHarness, httpx.AsyncClient, Metrics],
) -> None:
    h, client, _ = world
    waiting = await h.start("checkout", {"vip": False, "amount": 5000}, saga_id="big")
    for _ in range(300):
        approvals = (await client.get("/api/approvals", headers=headers(VIEWER))).json()
        if approvals["items"]:
            break
        await asyncio.sleep(0.01)
    assert [r["saga_id"] for r in approvals["items"]] == ["big"]
    too_long = await client.post(
        "/api/sagas/big/approve", headers=headers(OPERATOR), json={"note": "x" * 2001}
    )
    assert too_long.status_code == 422
    extra = await client.post(
        "/api/sagas/big/approve", headers=headers(OPERATOR), json={"note": "ok", "sudo": True}
    )
    assert extra.status_code == 422
    no_note = await client.post("/api/sagas/big/reject", headers=headers(OPERATOR), json={})
    assert no_note.status_code == 422
    assert (
        await client.post("/api/sagas/ghost/approve", headers=headers(OPERATOR), json={})
    ).status_code == 404
    accepted = await client.post(
        "/api/sagas/big/approve", headers=headers(OPERATOR), json={"note": "known customer"}
    )
    assert accepted.status_code == 202 and accepted.json()["accepted"] is True
    [state] = (await h.run_until_terminal([waiting])).values()
    assert state.status.value == "completed"
    said = [e for e in await h.history(waiting) if e.type == "OperatorIntervened"]
    assert json.loads(said[0].data)["who"] == "alice"
    assert json.loads(said[0].data)["note"] == "known customer"


async def test_dead_letters_are_listed_and_replayed_by_operators(
    world: tuple[SagaHarness, httpx.AsyncClient, Metrics],
) -> None:
    h, client, _ = world
    junk = TransportMessage("sagakit.commands.payment", "junk-1", b"{not json")
    await asyncio.wait_for(h.memory.publish([junk]), 5)
    letters = (await client.get("/api/dead-letters", headers=headers(VIEWER))).json()
    assert letters["depth"] == 1
    [letter] = letters["items"]
    assert (letter["reason"], letter["queue"]) == ("malformed", "sagakit.commands.payment")
    path = f"/api/dead-letters/{letter['id']}/replay"
    assert (await client.post(path, headers=headers(VIEWER), json={})).status_code == 403
    replayed = await client.post(path, headers=headers(OPERATOR), json={})
    assert replayed.json() == {"replayed": 1}
    missing = await client.post("/api/dead-letters/nope/replay", headers=headers(OPERATOR), json={})
    assert missing.status_code == 404


async def test_the_stream_tells_of_changes_as_they_happen(
    world: tuple[SagaHarness, httpx.AsyncClient, Metrics], unused_tcp_port: int
) -> None:
    import uvicorn

    h, client, _ = world
    app = client._transport.app  # type: ignore[attr-defined]  # the same admin app, served for real
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=unused_tcp_port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
        await asyncio.sleep(0.01)
    seen: list[dict[str, object]] = []

    async def listen() -> None:
        base = f"http://127.0.0.1:{unused_tcp_port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as live:
            # The dashboard's way: the token is exchanged once for a session cookie,
            # which the stream (an EventSource: no headers) then presents.
            signed_in = await live.post("/api/session", headers=headers(VIEWER))
            assert signed_in.status_code == 200
            cookie = signed_in.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie
            async with live.stream("GET", "/api/stream") as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        seen.append(json.loads(line[6:]))
                        if any(s["status"] == "completed" for s in seen):
                            return

    try:
        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.3)
        saga_id = await h.start("checkout", {"vip": True, "amount": 10}, saga_id="live")
        await h.run_until_terminal([saga_id])
        await asyncio.wait_for(listener, 10)
    finally:
        server.should_exit = True
        await serving
    assert {s["saga_id"] for s in seen} == {"live"}
    assert seen[-1]["status"] == "completed"
    assert (await client.get("/api/stream")).status_code == 401
    # A token in the address is no way in: it would sit in every access log.
    assert (await client.get(f"/api/stream?token={VIEWER}")).status_code == 401


async def test_no_cors_wildcard(world: tuple[SagaHarness, httpx.AsyncClient, Metrics]) -> None:
    _, client, _ = world
    answer = await client.get(
        "/api/me", headers={**headers(VIEWER), "Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in answer.headers


def test_tokens_are_checked_when_read() -> None:
    with pytest.raises(ValueError, match="role"):
        parse_tokens("admin:eve:0123456789abcdefgh")
    with pytest.raises(ValueError, match="too short"):
        parse_tokens("viewer:bob:short")
    assert "secret" not in repr(TOKENS[0]) and OPERATOR not in repr(TOKENS)


async def test_every_route_refuses_no_token_a_wrong_token_and_a_viewer_acting(
    world: tuple[SagaHarness, httpx.AsyncClient, Metrics],
) -> None:
    """Each route the API documents, each access rule: nothing happens unless allowed."""
    h, client, _ = world
    saga_id = await h.start("checkout", {"vip": True, "amount": 10}, saga_id="s1")
    await h.run_until_terminal([saga_id])
    junk = TransportMessage("sagakit.commands.payment", "junk-2", b"{not json")
    await asyncio.wait_for(h.memory.publish([junk]), 5)
    [letter] = (await client.get("/api/dead-letters", headers=headers(VIEWER))).json()["items"]
    spec = (await client.get("/api/openapi.json")).json()
    routes = [
        (
            method.upper(),
            path.format(
                saga_id=saga_id, letter_id=letter["id"], name="checkout", version=1, action="retry"
            ),
        )
        for path, methods in spec["paths"].items()
        for method in methods
    ]
    reads = [path for method, path in routes if method == "GET"]
    acts = [path for method, path in routes if method == "POST" and path != "/api/session"]
    assert "/api/stream" in reads and "/metrics" in reads and len(reads) == 19
    assert {p.rsplit("/", 1)[1] for p in acts} == {
        "retry",
        "compensate",
        "resolve",
        "approve",
        "reject",
        "replay",
    }
    body = {"note": "why not", "saga_ids": [saga_id]}
    for method, path in routes:
        for given in ({}, headers("not-the-token-at-all"), {"Authorization": OPERATOR}):
            answer = await client.request(method, path, headers=given, json=body)
            assert answer.status_code == 401, (method, path, given)
            assert answer.headers["www-authenticate"] == "Bearer"
        # No route takes a token in the address.
        sneaky = await client.request(method, f"{path}?token={OPERATOR}", json=body)
        assert sneaky.status_code == 401, (method, path)
    for path in reads:
        if path != "/api/stream":  # endless; test_the_stream_... reads it with a token
            assert (await client.get(path, headers=headers(VIEWER))).status_code == 200, path

    def sent(path: str) -> dict[str, object]:  # only the bulk action takes saga ids
        return body if path.startswith("/api/bulk/") else {"note": body["note"]}

    await outbox_drained(h.store)  # what the saga's own run sent is marked sent
    for path in acts:
        refused = await client.post(path, headers=headers(VIEWER), json=sent(path))
        assert refused.status_code == 403, path
        assert refused.json()["detail"] == "bob may read but not act"
    # None of that queued a thing, touched the saga, or took the dead letter away.
    assert await h.store.unsent_count() == 0
    assert "OperatorIntervened" not in [e.type for e in await h.history(saga_id)]
    assert (await client.get("/api/dead-letters", headers=headers(VIEWER))).json()["depth"] == 1
    for path in acts:
        answer = await client.post(path, headers=headers(OPERATOR), json=sent(path))
        if path.endswith("/replay"):
            assert (answer.status_code, answer.json()) == (200, {"replayed": 1})
        elif path.startswith("/api/bulk/"):
            assert (answer.status_code, answer.json()) == (202, {"accepted": ["s1"], "unknown": []})
        else:
            assert (answer.status_code, answer.json()) == (202, {"accepted": True, "saga_id": "s1"})
    for _ in range(300):  # the orchestrator takes each action in turn and records it
        said = [
            json.loads(e.data) for e in await h.history(saga_id) if e.type == "OperatorIntervened"
        ]
        if len(said) == 6:
            break
        await asyncio.sleep(0.01)
    # On a completed saga each is refused, but on the record with who asked and why.
    assert sorted((s["action"], s["who"], s["note"]) for s in said) == sorted(
        (action, "alice", "why not")
        for action in ("retry", "compensate", "resolve", "approve", "reject", "retry")
    )
    assert all(s["refused"] for s in said)
    # Every action, the bulk one and the replay too, is on the record with who and why.
    audited = (await client.get("/api/audit", headers=headers(VIEWER))).json()["items"]
    expected = [(action, "s1") for action in ("retry", "compensate", "resolve", "approve")]
    expected += [("reject", "s1"), ("retry", "s1"), ("replay", letter["id"])]
    assert sorted((a["action"], a["target"], a["who"], a["note"]) for a in audited) == sorted(
        (action, target, "alice", "why not") for action, target in expected
    )
