"""The edges of both HTTP APIs, one test per thing a review found wrong with them: the
token checked before a body is read, bodies bounded, NaN refused, offsets bounded,
strict headers, documentation served from here, every action on the record, orders
placed once, and personal data hidden from viewers, logs and spans."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sagakit import Participant, StepContext
from sagakit.api import AdminConfig, create_admin_app, parse_tokens
from sagakit.api.auth import Token
from sagakit.api.guard import MAX_BODY, Guard, max_body_from
from sagakit.model.messages import TransportMessage
from sagakit.observe import redaction
from sagakit.stores.dead_letters import SqlDeadLetters
from sagakit.testing import SagaHarness
from sagakit_shop.api import create_app
from sagakit_shop.app import Shop, embedded_urls, open_stores
from sagakit_shop.outside import Carrier, Gateway, Knobs, carrier_app, gateway_app
from sagakit_shop.world import default_world
from tests.sagas import CHECKOUT

OPERATOR = "edges-operator-secret-0123456789"
VIEWER = "edges-viewer-secret-0123456789ab"
TOKENS = parse_tokens(f"operator:olga:{OPERATOR}, viewer:victor:{VIEWER}")


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def admin() -> AsyncIterator[tuple[SagaHarness, httpx.AsyncClient, SqlDeadLetters]]:
    harness = SagaHarness([CHECKOUT])
    dead = SqlDeadLetters(harness.store)
    harness.memory._dead_letters = dead  # the embedded dead-letter queue, as the demo wires it
    payment = Participant("payment", harness.store, clock=harness.clock)

    @payment.command("charge")
    async def charge(ctx: StepContext) -> None:
        """Only here so the queue exists; the tests' messages never get this far."""

    harness.add(payment)
    async with harness as h:
        app = create_admin_app(
            AdminConfig(
                saga_store=h.store,
                definitions=[CHECKOUT],
                tokens=TOKENS,
                dead_letters=dead,
                max_body=4096,
                redaction=redaction.Redaction(("email", "card.*")),
            )
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            yield h, client, dead


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    opened = Shop(open_stores(embedded_urls(tmp_path)))
    await opened.setup(default_world(orders=10))
    transport = httpx.ASGITransport(app=create_app(opened))
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        yield client
    await opened.close()


# ------------------------------------------------------------------ the token before the body


async def test_the_token_is_checked_before_the_body_is_read() -> None:
    read: list[int] = []
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    async def receive() -> dict[str, Any]:
        read.append(1)
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    guard = Guard(app, max_body=1024, identify=lambda scope: False)
    big = {"type": "http", "method": "POST", "path": "/api/sagas/s/retry", "headers": []}
    await guard({**big, "headers": [(b"content-length", b"52428800")]}, receive, send)
    assert sent[0]["status"] == 401 and read == [] and reached == []
    # With a caller, a body over the limit is refused by its declared length, unread...
    sent.clear()
    guard = Guard(app, max_body=1024, identify=lambda scope: True)
    await guard({**big, "headers": [(b"content-length", b"52428800")]}, receive, send)
    assert sent[0]["status"] == 413 and read == [] and reached == []
    # ... and one that declares none, as soon as what was read passes the limit.
    sent.clear()
    await guard(big, receive, send)
    assert sent[0]["status"] == 413 and read == [1] and reached == []


async def test_a_malformed_body_without_a_token_is_a_401_not_a_422(admin: Any) -> None:
    _, client, _ = admin
    answer = await client.post(
        "/api/sagas/s1/retry", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 401


async def test_a_body_over_the_limit_is_a_413(admin: Any) -> None:
    _, client, _ = admin
    answer = await client.post(
        "/api/sagas/s1/retry", json={"note": "x" * 5000}, headers=bearer(OPERATOR)
    )
    assert answer.status_code == 413


# ------------------------------------------------------------------ numbers that are not JSON


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
async def test_nan_and_infinity_are_422_not_500(
    admin: Any, shop: httpx.AsyncClient, number: str
) -> None:
    _, client, _ = admin
    body = f'{{"customer_id": "c-ada", "sku": "lamp", "quantity": {number}}}'
    placed = await shop.post("/orders", content=body, headers={"Content-Type": "application/json"})
    assert placed.status_code == 422, placed.text
    acted = await client.post(
        "/api/sagas/s1/retry",
        content=f'{{"note": {number}}}',
        headers={**bearer(OPERATOR), "Content-Type": "application/json"},
    )
    assert acted.status_code == 422, acted.text


@pytest.mark.parametrize("query", ["offset=9223372036854775808", "offset=99999999999", "since=nan"])
async def test_limits_and_offsets_are_bounded(admin: Any, query: str) -> None:
    _, client, _ = admin
    answer = await client.get(f"/api/sagas?{query}", headers=bearer(VIEWER))
    assert answer.status_code == 422, answer.text


# ------------------------------------------------------------------ headers and documentation


async def test_every_answer_carries_strict_security_headers(admin: Any) -> None:
    _, client, _ = admin
    for answer in (
        await client.get("/"),
        await client.get("/api/me", headers=bearer(VIEWER)),
        await client.get("/api/me"),
        await client.get("/api/docs"),
    ):
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"


async def test_the_api_documentation_loads_only_from_this_server(admin: Any) -> None:
    _, client, _ = admin
    page = await client.get("/api/docs")
    assert page.status_code == 200
    assert "http" not in page.text.replace('name="referrer"', "")  # no other origin
    assert "<script>" not in page.text  # no inline script: only files, under the CSP
    for asset in ("/api/docs/assets/swagger-ui-bundle.js", "/api/docs/assets/swagger-ui.css"):
        assert f'"{asset}"' in page.text
        served = await client.get(asset)
        assert served.status_code == 200 and len(served.content) > 10_000
    assert (await client.get("/api/docs/start.js")).status_code == 200


# ------------------------------------------------------------------ every action on the record


async def test_a_replay_is_recorded_with_who_and_why_and_every_action_is_listed(
    admin: Any,
) -> None:
    h, client, dead = admin
    saga_id = await h.start("checkout", {"vip": True, "amount": 10}, saga_id="audited")
    junk = TransportMessage("sagakit.commands.payment", "junk-1", b"{not json")
    await asyncio.wait_for(h.memory.publish([junk]), 5)
    [letter] = (await client.get("/api/dead-letters", headers=bearer(VIEWER))).json()["items"]
    replayed = await client.post(
        f"/api/dead-letters/{letter['id']}/replay",
        json={"note": "handler fixed"},
        headers=bearer(OPERATOR),
    )
    assert replayed.status_code == 200
    compensated = await client.post(
        f"/api/sagas/{saga_id}/compensate",
        json={"note": "customer asked"},
        headers=bearer(OPERATOR),
    )
    assert compensated.status_code == 202
    audit = (await client.get("/api/audit", headers=bearer(VIEWER))).json()["items"]
    assert [(a["who"], a["action"], a["target"], a["note"], a["via"]) for a in audit] == [
        ("olga", "compensate", saga_id, "customer asked", "api"),
        ("olga", "replay", letter["id"], "handler fixed", "api"),
    ]
    assert dead is not None


# ------------------------------------------------------------------ orders placed once


async def test_the_same_idempotency_key_places_one_order(shop: httpx.AsyncClient) -> None:
    order = {"customer_id": "c-ada", "sku": "lamp", "quantity": 2}
    first = await shop.post("/orders", json=order, headers={"Idempotency-Key": "k1"})
    again = await shop.post("/orders", json=order, headers={"Idempotency-Key": "k1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["order_id"] == first.json()["order_id"]
    other = await shop.post(
        "/orders", json={**order, "quantity": 3}, headers={"Idempotency-Key": "k1"}
    )
    assert other.status_code == 409 and "different order" in other.json()["detail"]
    listed = (await shop.get("/orders")).json()
    assert len(listed) == 1  # one order for the key, whatever the retries
    assert (await shop.post("/orders", json=order)).json()["number"] == 102  # no key: a new one


async def test_a_placed_order_is_answered_as_it_was_written(shop: httpx.AsyncClient) -> None:
    placed = await shop.post("/orders", json={"customer_id": "c-ada", "sku": "lamp", "quantity": 3})
    assert placed.status_code == 201
    body = placed.json()
    assert body == (await shop.get(f"/orders/{body['order_id']}")).json()
    assert (body["status"], body["amount_cents"], body["amount"]) == ("new", 75_00, "$75.00")


async def test_concurrent_orders_with_one_key_give_one_order(shop: httpx.AsyncClient) -> None:
    order = {"customer_id": "c-ada", "sku": "lamp", "quantity": 1}
    answers = await asyncio.gather(
        *(shop.post("/orders", json=order, headers={"Idempotency-Key": "same"}) for _ in range(8))
    )
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
    assert len({a.json()["order_id"] for a in answers}) == 1


# ------------------------------------------------------------------ personal data


async def test_viewers_see_dead_letters_with_hidden_fields_masked(admin: Any) -> None:
    h, client, _ = admin
    body = json.dumps({"email": "ada@example.com", "card": {"number": "4111"}, "sku": "lamp"})
    junk = TransportMessage("sagakit.commands.payment", "pii-1", body.encode())
    await asyncio.wait_for(h.memory.publish([junk]), 5)
    [letter] = (await client.get("/api/dead-letters", headers=bearer(VIEWER))).json()["items"]
    shown = json.loads(letter["body"])
    assert shown == {"email": "***", "card": {"number": "***"}, "sku": "lamp"}


def test_redaction_masks_names_and_paths_in_logs_and_spans() -> None:
    rules = redaction.Redaction.parse("email, card.*, customer.name")
    data = {"email": "a@b", "card": {"n": 1}, "customer": {"name": "Ada", "id": "c"}, "x": [1]}
    assert rules.apply(data) == {
        "email": "***",
        "card": {"n": "***"},
        "customer": {"name": "***", "id": "c"},
        "x": [1],
    }
    assert redaction.redact_attributes({"order.email": "a@b", "order.sku": "s"}, rules) == {
        "order.email": "***",
        "order.sku": "s",
    }


def test_logs_of_the_loggers_an_application_names_go_the_same_way() -> None:
    from sagakit.observe.logs import configure

    stream = io.StringIO()
    configure("json", stream=stream, also=("myshop",))
    try:
        logging.getLogger("myshop.payment").info("charged")
        logging.getLogger("sagakit.runtime").info("started")
        logging.getLogger("someone.else").warning("not ours")
    finally:
        configure("quiet", also=("myshop",))
    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert events == ["charged", "started"]


def test_logs_hide_configured_fields_and_escape_control_characters() -> None:
    from sagakit.observe.logs import configure, get_logger

    redaction.configure(["email"])
    try:
        processed = redaction.log_processor(
            None, "info", {"event": "placed", "email": "ada@example.com", "saga_id": "o-1"}
        )
        assert processed == {"event": "placed", "email": "***", "saga_id": "o-1"}
        stream = io.StringIO()
        configure("json", stream=stream, level=logging.INFO)
        get_logger("sagakit.test").info(
            "note: bad\x00 \u202eeton and amqp://guest:S3cretPw@host/ broke", saga_id="o-1"
        )
    finally:
        redaction.configure(None)
        configure("quiet")
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert "\x00" not in line["event"] and "\u202e" not in line["event"]
    assert "\\x00" in line["event"] and "\\u202e" in line["event"]
    assert "S3cretPw" not in line["event"] and "guest:***@host" in line["event"]


def test_a_token_is_never_shown_by_its_repr_or_its_hint() -> None:
    token = Token("operator", "olga", OPERATOR)
    assert OPERATOR not in repr(token) and token.hint == OPERATOR[:4] + "…"


def test_a_malformed_tokens_setting_names_the_item_not_the_secret() -> None:
    secret = "S3cretS3cretS3cretS3cret"
    for given in (f"operator-olga-{secret}", f"admin:olga:{secret}", f"viewer:{secret}"):
        with pytest.raises(ValueError, match="item 1") as refused:
            parse_tokens(given)
        assert secret not in str(refused.value)


async def test_orders_take_numbers_with_no_row_every_placement_locks(pg_url: str) -> None:
    """Eight placements hold their transactions open at once and each still gets its
    number: nothing serializes them (a counter row would make the second wait for the
    first to commit)."""
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import create_async_engine

    from sagakit_shop.services.order import FIRST_NUMBER, _next_number, metadata

    engine = create_async_engine(
        pg_url.replace("postgresql://", "postgresql+asyncpg://"), pool_size=8, max_overflow=0
    )
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        all_in = asyncio.Barrier(8)

        async def place() -> int:
            async with engine.begin() as conn:
                number = int(await conn.scalar(select(_next_number(conn))))
                await asyncio.wait_for(all_in.wait(), 10)  # every one still uncommitted
                return number

        numbers = await asyncio.gather(*(place() for _ in range(8)))
    finally:
        await engine.dispose()
    assert sorted(numbers) == list(range(FIRST_NUMBER, FIRST_NUMBER + 8))


def test_the_shop_hides_its_customers_emails_and_names(monkeypatch: pytest.MonkeyPatch) -> None:
    from sagakit_shop.app import hide_personal_data

    monkeypatch.delenv("SAGAKIT_REDACT", raising=False)
    hide_personal_data()
    try:
        assert redaction.shown("email", "ada@example.com") == "***"
        assert redaction.shown("customer", "Ada") == "***"
        assert redaction.redact({"email": "a@b", "sku": "lamp"}) == {"email": "***", "sku": "lamp"}
    finally:
        redaction.configure(None)


def test_the_body_limit_is_set_where_the_services_are_deployed() -> None:
    assert max_body_from({}, 4096) == 4096
    assert max_body_from({"SAGAKIT_MAX_BODY": "2048"}) == 2048
    assert max_body_from({"SAGAKIT_MAX_BODY": "64k"}) == 64 * 1024
    assert max_body_from({"SAGAKIT_MAX_BODY": "1M"}) == 1024 * 1024
    for bad in ("0", "-5", "lots", "1.5m"):
        with pytest.raises(ValueError, match="SAGAKIT_MAX_BODY"):
            max_body_from({"SAGAKIT_MAX_BODY": bad})


@pytest.mark.parametrize("which", ["gateway", "carrier"])
async def test_the_outside_services_bound_bodies_too(which: str) -> None:
    app = (
        gateway_app(Gateway(Knobs(seed=1)))
        if which == "gateway"
        else carrier_app(Carrier(Knobs(seed=2), frozenset({"eu"})))
    )
    path = "/authorizations" if which == "gateway" else "/quotes"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://outside") as client:
        answer = await client.post(path, content=b"x" * (MAX_BODY + 1))
    assert answer.status_code == 413
