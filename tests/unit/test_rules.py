"""Routing rules: refused with the line and the reason when invalid, pinned when valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sagakit.engine.rules import RuleError, RuleFailed, RuleSet
from sagakit.model.decide import decide
from sagakit.model.status import SagaStatus
from sagakit.model.triggers import Signal, Start, Tick
from tests.sagas import CHECKOUT, CHECKOUT_RULES

RULES = RuleSet.parse(CHECKOUT_RULES, definition=CHECKOUT)


def verdicts(data: dict[str, object]) -> dict[str, str]:
    return {step: verdict for step, verdict, _ in RULES.plan(CHECKOUT, data)}


def test_rules_route_steps_by_the_sagas_data() -> None:
    assert verdicts({"vip": True, "amount": 20}) == {
        "screen": "skip",
        "manual_approval": "skip",
        "charge": "run",
        "ship": "run",
    }
    assert verdicts({"vip": False, "amount": 5000}) == {
        "screen": "run",
        "manual_approval": "run",
        "charge": "run",
        "ship": "run",
    }
    [(_, _, because)] = [
        p for p in RULES.plan(CHECKOUT, {"vip": True, "amount": 20}) if p[0] == "screen"
    ]
    assert because == "VIPs skip the fraud check"


def test_a_rule_that_cannot_be_evaluated_says_which_and_why() -> None:
    verdict, because = RULES.verdict(CHECKOUT.step("screen"), {"amount": 3})
    assert verdict == "run"  # the documented fallback: the step runs
    assert "'VIPs skip the fraud check'" in because and "vip" in because
    assert because.endswith("on_error = run")
    attention = RuleSet.parse(CHECKOUT_RULES.replace('skip = ["screen"]', _on_error("attention")))
    with pytest.raises(RuleFailed, match=r"'VIPs skip the fraud check'.*vip"):
        attention.verdict(CHECKOUT.step("screen"), {"amount": 3})


def _on_error(fallback: str) -> str:
    return f'skip = ["screen"]\non_error = "{fallback}"'


@pytest.mark.parametrize(
    ("change", "line", "reason"),
    [
        (('when = "data.vip"', 'when = "data.vip ==== 1"'), 6, "does not parse"),
        (('skip = ["screen"]', 'skip = ["teleport"]'), 7, "has no step 'teleport'"),
        (('skip = ["screen"]', 'skip = ["ship"]'), 7, "the pivot 'ship' cannot be skipped"),
        (
            ('require = ["manual_approval"]', 'require = ["charge"]'),
            12,
            "'charge' always runs; require is for optional steps",
        ),
        (("version = 1", "version = 0"), 2, "version must be a whole number"),
        (('saga = "checkout"', 'saga = "order"'), 1, "these rules are for saga 'order'"),
        (
            ('[[rule]]\nname = "VIPs', '[[rule]]\nflavour = 3\nname = "VIPs'),
            5,
            "unknown rule setting 'flavour'",
        ),
        (("version = 1", 'version = 1\nowner = "me"'), 3, "unknown setting 'owner'"),
        (("version = 1", "version = 1 1"), 2, "line 2"),
        (
            ('name = "large orders wait for a person"', 'name = "VIPs skip the fraud check"'),
            9,
            "two rules are named",
        ),
    ],
)
def test_invalid_rules_are_refused_with_the_line_and_the_reason(
    change: tuple[str, str], line: int, reason: str
) -> None:
    broken = CHECKOUT_RULES.replace(*change, 1)
    with pytest.raises(RuleError) as caught:
        RuleSet.parse(broken, source="checkout.toml", definition=CHECKOUT)
    assert caught.value.line == line, str(caught.value)
    assert reason in str(caught.value)
    assert str(caught.value).startswith(f"checkout.toml:{line}: ")


def run(data: dict[str, object], rules: RuleSet | None = RULES):  # type: ignore[no-untyped-def]
    return decide(CHECKOUT, None, Start("s", data), now=0.0, reply_to="r", rules=rules)


def test_a_vip_skips_the_check_and_no_one_is_asked_to_approve() -> None:
    first = run({"vip": True, "amount": 20})
    assert [e.event_type for e in first.events] == [
        "SagaStarted",
        "StepSkipped",
        "StepSkipped",
        "StepRequested",
    ]
    assert first.events[0].rules_version == 1  # type: ignore[attr-defined]
    assert [c.envelope.type for c in first.commands] == ["payment.charge"]


def test_without_rules_optional_steps_are_skipped_and_the_rest_run() -> None:
    first = run({"vip": True, "amount": 5000}, rules=None)
    assert [c.envelope.type for c in first.commands] == ["fraud.screen"]


def approve_path(decision: str) -> list[str]:
    from sagakit.model.messages import ReplyBody
    from sagakit.model.triggers import Reply

    first = run({"vip": False, "amount": 5000})
    state = first.state
    screened = decide(
        CHECKOUT,
        state,
        Reply("screen", "action", 1, "m1", ReplyBody(ok=True)),
        now=1.0,
        reply_to="r",
        rules=RULES,
    )
    assert [e.event_type for e in screened.events] == ["StepSucceeded", "ApprovalRequested"]
    assert screened.commands == []  # waiting for a person, not for a service
    answered = decide(
        CHECKOUT,
        state,
        Signal(decision, "alice", "checked the customer"),  # type: ignore[arg-type]
        now=2.0,
        reply_to="r",
        rules=RULES,
    )
    return [e.event_type for e in answered.events] + [c.envelope.type for c in answered.commands]


def test_an_approval_lets_the_saga_go_on() -> None:
    assert approve_path("approve") == [
        "OperatorIntervened",
        "StepSucceeded",
        "StepRequested",
        "payment.charge",
    ]


def test_a_rejection_compensates_what_came_before() -> None:
    assert approve_path("reject") == [
        "OperatorIntervened",
        "StepFailed",
        "CompensationStarted",
        "CompensationRequested",
        "fraud.clear",
    ]


def test_an_unanswered_approval_follows_its_timeout_policy() -> None:
    from sagakit.model.messages import ReplyBody
    from sagakit.model.triggers import Reply

    first = run({"vip": False, "amount": 5000})
    decide(
        CHECKOUT,
        first.state,
        Reply("screen", "action", 1, "m1", ReplyBody(ok=True)),
        now=1.0,
        reply_to="r",
        rules=RULES,
    )
    expired = decide(CHECKOUT, first.state, Tick(), now=3700.0, reply_to="r", rules=RULES)
    assert [e.event_type for e in expired.events][:3] == [
        "StepTimedOut",
        "StepFailed",
        "CompensationStarted",
    ]
    assert "no answer within 1:00:00" in (first.state.reason or "")


def test_a_rule_that_fails_for_one_saga_takes_its_fallback() -> None:
    # No "vip" field: the VIP rule cannot be evaluated. By default the step runs.
    first = run({"amount": 5000})
    assert [e.event_type for e in first.events] == ["SagaStarted", "StepRequested"]
    assert first.state.status is SagaStatus.RUNNING
    skipping = RuleSet.parse(CHECKOUT_RULES.replace('skip = ["screen"]', _on_error("skip")))
    skipped = run({"amount": 5000}, skipping)
    assert [e.event_type for e in skipped.events][:2] == ["SagaStarted", "StepSkipped"]
    assert "could not be evaluated" in skipped.events[1].rule  # type: ignore[attr-defined]
    asking = RuleSet.parse(CHECKOUT_RULES.replace('skip = ["screen"]', _on_error("attention")))
    stopped = run({"amount": 5000}, asking)
    assert [e.event_type for e in stopped.events] == ["SagaStarted", "SagaNeedsAttention"]
    assert stopped.state.status is SagaStatus.NEEDS_ATTENTION
    assert "VIPs skip the fraud check" in (stopped.state.reason or "")


def _rules_when(condition: str) -> str:
    return CHECKOUT_RULES.replace('when = "data.vip"', f"when = {json.dumps(condition)}")


TEN = "[0,1,2,3,4,5,6,7,8,9]"


@pytest.mark.parametrize(
    ("condition", "reason"),
    [
        # four nested loops over ten items: seconds per evaluation, refused when read
        (
            f"{TEN}.all(a, {TEN}.all(b, {TEN}.all(c, {TEN}.all(d, a + b + c + d >= 0))))",
            "nests comprehensions 4 deep",
        ),
        ("data.a.all(x, data.b.all(y, x + y >= 0))", "may cost"),
        ("(" * 200 + "data.vip" + ")" * 200, "nests brackets 200 deep"),
        ("data.vip || " * 100 + "data.vip", "characters long"),
    ],
)
def test_a_condition_over_its_budget_is_refused_when_read(condition: str, reason: str) -> None:
    with pytest.raises(RuleError, match=reason) as refused:
        RuleSet.parse(_rules_when(condition), definition=CHECKOUT)
    assert refused.value.line == 6


def test_a_condition_within_its_budget_reads_and_runs() -> None:
    rules = RuleSet.parse(_rules_when("data.tags.exists(t, t == 'vip')"), definition=CHECKOUT)
    screen = CHECKOUT.step("screen")
    assert rules.verdict(screen, {"tags": ["new", "vip"], "amount": 1})[0] == "skip"
    # More items than the bound counted on: the rule fails, and the step runs.
    verdict, because = rules.verdict(screen, {"tags": ["vip"] * 101, "amount": 1})
    assert verdict == "run" and "101 items" in because


def test_an_evaluation_over_its_time_budget_is_stopped_and_the_worker_replaced() -> None:
    from sagakit.engine.rule_budget import RuleWorker

    worker = RuleWorker(budget=0.05)
    try:
        slow = f"{TEN}.all(a, {TEN}.all(b, {TEN}.all(c, a + b + c >= 0)))"
        evaluated, why = worker.evaluate(slow, {}, {})
        assert not evaluated and "longer than its budget of 0.05s" in why
        assert worker.evaluate("1 + 1 == 2", {}, {}) == (True, "true")  # a fresh worker
    finally:
        worker.close()


def test_a_signal_with_nothing_pending_is_recorded_as_refused() -> None:
    first = run({"vip": True, "amount": 20})
    answered = decide(
        CHECKOUT, first.state, Signal("approve", "bob"), now=1.0, reply_to="r", rules=RULES
    )
    assert answered.events[0].refused == "no approval is pending"  # type: ignore[attr-defined]


async def test_a_stored_rule_set_over_the_limits_is_refused_when_read(tmp_path: Path) -> None:
    """Published before the limits, read after: its sagas need attention with the reason,
    and nothing runs the condition."""
    from sqlalchemy import insert

    from sagakit.engine.rules import RuleBook
    from sagakit.stores import open_store
    from sagakit.stores.schema import saga_rules

    store = open_store(f"sqlite:///{tmp_path / 'rules.db'}")
    await store.migrate()
    deep = "(" * 200 + "data.vip" + ")" * 200
    async with store.unit() as unit:
        await unit.connection.execute(
            insert(saga_rules).values(
                saga="checkout", version=1, source=_rules_when(deep), published_at=0.0
            )
        )
    async with store.unit() as unit:
        read = await RuleBook().get(unit.records.rules, "checkout", 1)
    await store.close()
    assert read.broken is not None and "nests brackets 200 deep" in read.broken
    first = run({"vip": True, "amount": 20}, read)
    assert [e.event_type for e in first.events] == ["SagaStarted", "SagaNeedsAttention"]
    assert "nests brackets 200 deep" in (first.state.reason or "")


async def test_an_evaluation_waits_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A condition that takes its whole budget costs the saga that wait, not the process:
    a heartbeat on the same event loop keeps beating while the orchestrator decides."""
    import asyncio
    import time

    from sagakit import Orchestrator
    from sagakit.engine import rule_budget
    from sagakit.engine.rules import publish
    from sagakit.stores import open_store

    def slow(condition: str, data: object, saga: object) -> tuple[bool, str]:
        time.sleep(0.6)  # a condition that runs to its budget, in the worker
        return True, "false"

    monkeypatch.setattr(rule_budget.WORKER, "evaluate", slow)
    store = open_store(f"sqlite:///{tmp_path / 'slow.db'}")
    await store.migrate()
    async with store.unit() as unit:
        await publish(unit, RuleSet.parse(CHECKOUT_RULES, definition=CHECKOUT))
    orchestrator = Orchestrator(store, [CHECKOUT])
    gaps: list[float] = []

    async def heartbeat() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    beating = asyncio.create_task(heartbeat())
    try:
        started = time.monotonic()
        await orchestrator.start("checkout", {"vip": True, "amount": 20}, saga_id="slow")
        took = time.monotonic() - started
    finally:
        beating.cancel()
        await store.close()
    assert took >= 0.6  # the rule was evaluated, slowly
    assert max(gaps) < 0.3, f"the event loop stalled for {max(gaps):.2f}s"
