"""The decision function: advance, retry, time out, compensate in reverse, give up."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import timedelta

import pytest

from sagakit.model.decide import decide, outstanding
from sagakit.model.decision import Decision
from sagakit.model.definition import SagaDefinition, approval
from sagakit.model.messages import ReplyBody
from sagakit.model.state import SagaState
from sagakit.model.status import SagaStatus, StepStatus
from sagakit.model.triggers import Intervene, Reply, Start, Tick
from tests.sagas import ORDER, TRIP


class Driver:
    """Feeds triggers to decide() the way the orchestrator would, keeping the state."""

    def __init__(self, definition: SagaDefinition) -> None:
        self.definition = definition
        self.now = 100.0
        self.state: SagaState | None = None
        self.ids = (f"m{n}" for n in itertools.count(1))
        self.decisions: list[Decision] = []

    def _decide(self, trigger: Start | Reply | Tick) -> Decision:
        decision = decide(
            self.definition,
            self.state,
            trigger,
            now=self.now,
            reply_to="replies",
            new_id=lambda: next(self.ids),
        )
        self.state = decision.state
        self.decisions.append(decision)
        return decision

    def start(self) -> Decision:
        return self._decide(Start("s1", {"amount": 10}, key="order-1"))

    def reply(
        self,
        step: str,
        *,
        ok: bool = True,
        op: str = "action",
        attempt: int | None = None,
        retryable: bool = False,
        data: dict | None = None,
        reason: str = "no",
    ) -> Decision:
        assert self.state is not None
        st = self.state.steps[step]
        attempt = attempt or (st.attempt if op == "action" else st.compensation_attempt)
        body = ReplyBody(ok=ok, data=data or {}, reason=None if ok else reason, retryable=retryable)
        return self._decide(
            Reply(step, op, attempt, f"r-{step}-{op}-{attempt}-{len(self.decisions)}", body)
        )  # type: ignore[arg-type]

    def tick(self, advance: float) -> Decision:
        self.now += advance
        return self._decide(Tick())

    def step(self, name: str) -> StepStatus:
        assert self.state is not None
        return self.state.steps[name].status


def types(decision: Decision) -> list[str]:
    return [e.event_type for e in decision.events]


def sent(decision: Decision) -> list[str]:
    return [f"{c.envelope.type}/{c.envelope.op}" for c in decision.commands]


def test_start_requests_the_first_step() -> None:
    d = Driver(ORDER)
    first = d.start()
    assert types(first) == ["SagaStarted", "StepRequested"]
    assert sent(first) == ["inventory.reserve/action"]
    command = first.commands[0]
    assert command.destination == "sagakit.commands.inventory"
    assert command.envelope.reply_to == "replies"
    assert command.envelope.payload == {"amount": 10}
    assert first.expected_version == 0 and first.state.version == 2


def test_happy_path_runs_every_step_in_order_and_completes() -> None:
    d = Driver(ORDER)
    d.start()
    assert sent(d.reply("reserve", data={"reservation": "r1"})) == ["payment.charge/action"]
    charge = d.decisions[-1].commands[0].envelope
    assert charge.payload == {"amount": 10, "reservation": "r1"}  # step results flow forward
    assert sent(d.reply("charge")) == ["shipping.ship/action"]
    assert sent(d.reply("ship")) == ["notification.send/action"]
    last = d.reply("notify")
    assert types(last) == ["StepSucceeded", "SagaCompleted"]
    assert d.state is not None and d.state.status is SagaStatus.COMPLETED
    assert d.state.wake_at is None


def test_failure_compensates_completed_steps_in_reverse() -> None:
    d = Driver(ORDER)
    d.start()
    d.reply("reserve")
    d.reply("charge")
    failed = d.reply("ship", ok=False, reason="unsupported region")
    assert types(failed) == ["StepFailed", "CompensationStarted", "CompensationRequested"]
    assert sent(failed) == ["payment.refund/compensation"]
    assert sent(d.reply("charge", op="compensation")) == ["inventory.release/compensation"]
    done = d.reply("reserve", op="compensation")
    assert types(done) == ["StepCompensated", "SagaCompensated"]
    assert d.state is not None and d.state.status is SagaStatus.COMPENSATED
    assert d.state.reason == "ship failed: unsupported region"


def test_a_refused_step_is_not_compensated_itself() -> None:
    d = Driver(ORDER)
    d.start()
    d.reply("reserve")
    failed = d.reply("charge", ok=False, reason="declined")
    assert sent(failed) == ["inventory.release/compensation"]  # not payment.refund


def test_first_step_failing_ends_compensated_with_nothing_to_undo() -> None:
    d = Driver(ORDER)
    d.start()
    failed = d.reply("reserve", ok=False, reason="out of stock")
    assert types(failed) == ["StepFailed", "CompensationStarted", "SagaCompensated"]
    assert failed.commands == []


def test_parallel_group_requests_together_and_waits_for_all() -> None:
    d = Driver(TRIP)
    d.start()
    assert sorted(sent(d.reply("flight"))) == ["cars.rent/action", "hotel.book/action"]
    assert sent(d.reply("car")) == []  # hotel still running
    assert sent(d.reply("hotel")) == ["bank.charge/action"]


def test_sibling_failure_compensates_running_and_done_siblings_then_earlier_stages() -> None:
    d = Driver(TRIP)
    d.start()
    d.reply("flight")
    failed = d.reply("car", ok=False, reason="no cars")
    # the hotel is still running: its effect is unknown, so it is compensated at once
    assert sent(failed) == ["hotel.cancel/compensation"]
    zombie = d.reply("hotel")  # its success arrives after compensation began
    assert types(zombie) == ["ReplyIgnored"]
    assert sent(d.reply("hotel", op="compensation")) == ["airline.cancel/compensation"]
    assert types(d.reply("flight", op="compensation"))[-1] == "SagaCompensated"


def test_pivot_failure_compensates_the_whole_parallel_group() -> None:
    d = Driver(TRIP)
    d.start()
    d.reply("flight")
    d.reply("hotel")
    d.reply("car")
    failed = d.reply("pay", ok=False, reason="declined")
    assert sorted(sent(failed)) == ["cars.return/compensation", "hotel.cancel/compensation"]
    assert sent(d.reply("hotel", op="compensation")) == []
    assert sent(d.reply("car", op="compensation")) == ["airline.cancel/compensation"]


def test_transient_failure_schedules_a_durable_retry() -> None:
    d = Driver(ORDER)
    d.start()
    failed = d.reply("reserve", ok=False, retryable=True, reason="db busy")
    assert types(failed) == ["StepFailed", "RetryScheduled"]
    assert failed.commands == []
    assert d.state is not None
    due = d.state.steps["reserve"].retry_at
    assert due is not None and d.state.wake_at == due
    assert types(d.tick(0.001)) == []  # not due yet
    again = d.tick(1.0)
    assert types(again) == ["StepRequested"]
    assert again.commands[0].envelope.attempt == 2


def test_transient_failures_past_the_budget_compensate() -> None:
    d = Driver(ORDER)
    d.start()
    d.reply("reserve")
    for _ in range(2):
        d.reply("charge", ok=False, retryable=True)
        d.tick(1.0)
    last = d.reply("charge", ok=False, retryable=True, reason="gateway down")
    assert types(last) == ["StepFailed", "CompensationStarted", "CompensationRequested"]
    assert d.state is not None and d.state.reason == "charge failed: gateway down after 3 attempts"
    # the charge never took effect (every attempt rolled back), but compensating
    # "maybe" is safe, so it is undone too before the reservation
    assert sent(last) == ["payment.refund/compensation"]


def test_stale_retryable_failure_of_an_old_attempt_is_ignored() -> None:
    d = Driver(ORDER)
    d.start()
    d.reply("reserve", ok=False, retryable=True)
    d.tick(1.0)  # attempt 2 is out
    late = d.reply("reserve", ok=False, retryable=True, attempt=1)
    assert types(late) == ["ReplyIgnored"]
    assert "stale" in late.events[0].why  # type: ignore[attr-defined]


def test_success_from_an_earlier_attempt_is_accepted() -> None:
    d = Driver(ORDER)
    d.start()
    d.reply("reserve", ok=False, retryable=True)
    d.tick(1.0)
    late = d.reply("reserve", attempt=1)
    assert types(late) == ["StepSucceeded", "StepRequested"]


def test_deadline_retries_then_compensates_including_the_timed_out_step() -> None:
    d = Driver(ORDER)
    d.start()
    d.reply("reserve")
    for attempt in (1, 2):
        timed_out = d.tick(31.0)
        assert types(timed_out) == ["StepTimedOut", "RetryScheduled"]
        assert types(d.tick(1.0)) == ["StepRequested"]
        assert d.state is not None and d.state.steps["charge"].attempt == attempt + 1
    final = d.tick(31.0)
    assert types(final) == ["StepTimedOut", "CompensationStarted", "CompensationRequested"]
    # the charge may have happened: it is compensated first, then the reservation
    assert sent(final) == ["payment.refund/compensation"]


def test_a_failure_that_comes_after_its_attempt_timed_out_counts_once() -> None:
    # A handler cancelled at its timeout answers "failed" just after the saga's own
    # deadline fired for the same try: that try is counted once, not twice.
    d = Driver(ORDER)
    d.start()
    d.reply("reserve")
    assert types(d.tick(31.0)) == ["StepTimedOut", "RetryScheduled"]
    late = d.reply("charge", ok=False, retryable=True, attempt=1, reason="ran past its timeout")
    assert types(late) == ["ReplyIgnored"]
    assert d.state is not None and d.state.steps["charge"].attempts_counted == 1
    assert types(d.tick(1.0)) == ["StepRequested"]
    assert d.state.steps["charge"].attempt == 2


def test_pivot_that_times_out_for_good_needs_attention() -> None:
    d = Driver(ORDER)
    d.start()
    d.reply("reserve")
    d.reply("charge")
    for _ in range(2):
        d.tick(31.0)
        d.tick(1.0)
    final = d.tick(31.0)
    assert types(final) == ["StepTimedOut", "SagaNeedsAttention"]
    assert d.state is not None and d.state.status is SagaStatus.NEEDS_ATTENTION
    assert "outcome is unknown" in (d.state.reason or "")


def test_retriable_step_is_retried_through_any_number_of_transient_failures() -> None:
    d = Driver(ORDER)
    d.start()
    for step in ("reserve", "charge", "ship"):
        d.reply(step)
    for _ in range(20):
        failed = d.reply("notify", ok=False, retryable=True, reason="smtp down")
        assert types(failed) == ["StepFailed", "RetryScheduled"]
        d.tick(1.0)
    assert types(d.reply("notify")) == ["StepSucceeded", "SagaCompleted"]


def test_a_retriable_step_refused_for_good_needs_attention() -> None:
    # Retrying would only get the stored refusal back forever; after the pivot nothing
    # can be undone, so a person must look.
    d = Driver(ORDER)
    d.start()
    for step in ("reserve", "charge", "ship"):
        d.reply(step)
    refused = d.reply("notify", ok=False, reason="customer unsubscribed")
    assert types(refused) == ["StepFailed", "SagaNeedsAttention"]
    assert d.state is not None and "notify was refused" in (d.state.reason or "")


def test_a_pivot_that_only_failed_transiently_is_not_guessed_at() -> None:
    # An earlier attempt may still be on its way and commit the shipment: compensating
    # now could leave a compensated saga with a shipment. A person must look.
    d = Driver(ORDER)
    d.start()
    d.reply("reserve")
    d.reply("charge")
    for _ in range(2):
        d.reply("ship", ok=False, retryable=True)
        d.tick(1.0)
    last = d.reply("ship", ok=False, retryable=True, reason="carrier busy")
    assert types(last) == ["StepFailed", "SagaNeedsAttention"]
    assert last.commands == []


def test_a_refused_pivot_compensates_what_came_before() -> None:
    d = Driver(ORDER)
    d.start()
    d.reply("reserve")
    d.reply("charge")
    refused = d.reply("ship", ok=False, reason="unsupported region")
    assert types(refused) == ["StepFailed", "CompensationStarted", "CompensationRequested"]


def test_parallel_siblings_giving_up_in_the_same_tick_compensate_once() -> None:
    d = Driver(TRIP)
    d.start()
    d.reply("flight")
    for _ in range(2):  # hotel and car both time out, and are retried, together
        d.tick(31.0)
        d.tick(1.0)
    final = d.tick(31.0)
    assert types(final).count("CompensationStarted") == 1
    assert sorted(sent(final)) == ["cars.return/compensation", "hotel.cancel/compensation"]


def test_failing_compensation_retries_then_needs_attention_never_compensated() -> None:
    d = Driver(ORDER)
    d.start()
    d.reply("reserve")
    d.reply("charge", ok=False)
    policy = ORDER.step("reserve").compensation_retry
    assert policy.attempts is not None
    for _ in range(policy.attempts - 1):
        failed = d.reply("reserve", op="compensation", ok=False, reason="warehouse offline")
        assert types(failed) == ["CompensationFailed", "RetryScheduled"]
        assert sent(d.tick(60.0)) == ["inventory.release/compensation"]
    last = d.reply("reserve", op="compensation", ok=False, reason="warehouse offline")
    assert types(last) == ["CompensationFailed", "SagaNeedsAttention"]
    assert d.state is not None and d.state.status is SagaStatus.NEEDS_ATTENTION
    assert d.state.wake_at is None


def test_replies_after_the_end_are_recorded_and_change_nothing() -> None:
    d = Driver(ORDER)
    d.start()
    d.reply("reserve", ok=False)
    assert d.state is not None and d.state.status is SagaStatus.COMPENSATED
    late = d.reply("reserve", attempt=1)
    assert types(late) == ["ReplyIgnored"]
    assert d.state.status is SagaStatus.COMPENSATED


def test_unknown_step_reply_is_recorded_not_fatal() -> None:
    d = Driver(ORDER)
    d.start()
    body = ReplyBody(ok=True)
    decision = decide(
        ORDER, d.state, Reply("teleport", "action", 1, "x", body), now=1, reply_to="r"
    )
    assert types(decision) == ["ReplyIgnored"]


def test_every_decision_is_a_legal_forward_history() -> None:
    d = Driver(TRIP)
    d.start()
    d.reply("flight")
    d.reply("hotel")
    d.reply("car", ok=False, retryable=True)
    d.tick(5)
    d.reply("car")
    d.reply("pay")
    events: Iterable = [e for dec in d.decisions for e in dec.events]
    assert [e.event_type for e in events][-1] == "SagaCompleted"


# -- a person acting on the saga ------------------------------------------------------


def stuck_compensation(d: Driver) -> None:
    d.start()
    d.reply("reserve")
    d.reply("charge", ok=False)
    attempts = ORDER.step("reserve").compensation_retry.attempts
    assert attempts is not None
    for _ in range(attempts - 1):
        d.reply("reserve", op="compensation", ok=False, reason="warehouse offline")
        d.tick(60.0)
    d.reply("reserve", op="compensation", ok=False, reason="warehouse offline")
    assert d.state is not None and d.state.status is SagaStatus.NEEDS_ATTENTION


def intervene(d: Driver, action: str, note: str = "") -> Decision:
    return d._decide(Intervene(action, "ops@example.com", note))  # type: ignore[arg-type]


def test_retry_resumes_a_stuck_compensation_with_a_fresh_budget() -> None:
    d = Driver(ORDER)
    stuck_compensation(d)
    retried = intervene(d, "retry", "warehouse is back")
    assert types(retried)[:3] == ["OperatorIntervened", "RetryScheduled", "CompensationRequested"]
    assert sent(retried) == ["inventory.release/compensation"]
    event = retried.events[0]
    assert (event.who, event.note, event.resume) == (  # type: ignore[attr-defined]
        "ops@example.com",
        "warehouse is back",
        SagaStatus.COMPENSATING,
    )
    # the budget starts again: a failure now schedules a retry instead of giving up
    again = d.reply("reserve", op="compensation", ok=False, reason="still flaky")
    assert types(again) == ["CompensationFailed", "RetryScheduled"]
    d.tick(60.0)
    assert types(d.reply("reserve", op="compensation"))[-1] == "SagaCompensated"


def test_resolve_closes_a_saga_that_needs_attention() -> None:
    d = Driver(ORDER)
    stuck_compensation(d)
    resolved = intervene(d, "resolve", "released the stock by hand")
    assert types(resolved) == ["OperatorIntervened"]
    assert d.state is not None and d.state.status is SagaStatus.RESOLVED
    assert d.state.reason == "resolved by ops@example.com: released the stock by hand"
    assert d.state.status.terminal and d.state.wake_at is None


def test_compensate_turns_a_running_saga_around() -> None:
    d = Driver(ORDER)
    d.start()
    d.reply("reserve")
    undo = intervene(d, "compensate", "customer cancelled by phone")
    assert types(undo)[0] == "OperatorIntervened"
    # the charge was in flight: its outcome is unknown, so it is undone first
    assert sent(undo) == ["payment.refund/compensation"]
    d.reply("charge", op="compensation")
    assert types(d.reply("reserve", op="compensation"))[-1] == "SagaCompensated"
    assert d.state is not None
    assert d.state.reason == "ops@example.com asked to compensate: customer cancelled by phone"


def test_compensate_is_refused_after_the_pivot_committed() -> None:
    d = Driver(ORDER)
    d.start()
    for step in ("reserve", "charge", "ship"):
        d.reply(step)
    refused = intervene(d, "compensate")
    assert types(refused) == ["OperatorIntervened"]
    assert "the pivot ship committed" in (refused.events[0].refused or "")  # type: ignore[attr-defined]
    assert d.state is not None and d.state.status is SagaStatus.RUNNING


def test_an_unknown_pivot_can_be_retried_or_compensated_by_a_person() -> None:
    for action, expected in (
        ("retry", ["shipping.ship/action"]),
        ("compensate", ["payment.refund/compensation"]),
    ):
        d = Driver(ORDER)
        d.start()
        d.reply("reserve")
        d.reply("charge")
        for _ in range(2):
            d.tick(31.0)
            d.tick(1.0)
        d.tick(31.0)
        assert d.state is not None and d.state.status is SagaStatus.NEEDS_ATTENTION
        assert sent(intervene(d, action)) == expected


@pytest.mark.parametrize(
    ("action", "why"),
    [
        ("resolve", "only a saga that needs attention"),
        ("retry", "only a saga that needs attention"),
    ],
)
def test_actions_that_do_not_fit_are_recorded_as_refused(action: str, why: str) -> None:
    d = Driver(ORDER)
    d.start()
    refused = intervene(d, action)
    assert types(refused) == ["OperatorIntervened"]
    assert why in (refused.events[0].refused or "")  # type: ignore[attr-defined]


def test_a_deferred_step_reads_as_deferred_not_as_a_failure() -> None:
    from sagakit.model.describe import describe, outcome
    from sagakit.model.events import CompensationFailed, RetryScheduled, StepFailed

    deferred = StepFailed(
        step="pay", attempt=1, reason="breaker gw is open", retryable=True, deferred=True
    )
    failed = StepFailed(step="pay", attempt=1, reason="timeout", retryable=True)
    undo = CompensationFailed(step="pay", attempt=2, reason="breaker gw is open", deferred=True)
    assert describe(undo) == (
        "pay: compensation deferred (breaker gw is open) - tries again when the dependency is back"
    )
    # a wait reads grey on the timeline and the dashboard, not red
    assert [outcome(e) for e in (deferred, undo)] == ["info", "info"]
    assert outcome(failed) == "failed"
    # and the undo's retry belongs to the way back (the dashboard's compensation node)
    again = RetryScheduled(step="pay", op="compensation", attempt=2, due_at=10.0)
    assert outcome(again) == "undo"
    assert outcome(again.model_copy(update={"op": "action"})) == "info"
    assert (
        describe(deferred)
        == "pay: deferred (breaker gw is open) - tries again when the dependency is back"
    )
    assert describe(failed) == "pay: failed (timeout) - will retry if allowed"


def _outstanding(d: Driver) -> list[tuple[str, str | None, int, str]]:
    assert d.state is not None
    commands = outstanding(d.definition, d.state, now=d.now, reply_to="replies")
    return [
        (c.envelope.type, c.envelope.op, c.envelope.attempt, c.envelope.message_id)
        for c in commands
    ]


def test_outstanding_rebuilds_the_commands_a_saga_waits_on_from_its_state() -> None:
    d = Driver(ORDER)
    first = d.start().commands[0]
    assert _outstanding(d) == [("inventory.reserve", "action", 1, first.envelope.message_id)]
    assert d.state is not None
    rebuilt = outstanding(d.definition, d.state, now=d.now, reply_to="replies")[0]
    assert rebuilt.destination == first.destination
    assert rebuilt.envelope.step == "reserve"
    assert rebuilt.envelope.payload == first.envelope.payload
    d.reply("reserve")
    retry = d.reply("charge", ok=False, retryable=True)
    assert types(retry)[-1] == "RetryScheduled"
    assert _outstanding(d) == []  # it waits for its retry's timer, not for an answer
    again = d.tick(60).commands[0].envelope
    assert _outstanding(d) == [("payment.charge", "action", 2, again.message_id)]
    refund = d.reply("charge", ok=False, reason="declined").commands[0].envelope
    assert _outstanding(d) == [("inventory.release", "compensation", 1, refund.message_id)]
    d.reply("reserve", op="compensation")
    assert _outstanding(d) == []  # ended: nothing is owed


def test_outstanding_owes_no_command_for_a_person_s_answer() -> None:
    d = Driver(
        SagaDefinition(
            "confirmed",
            steps=[approval("confirm", timeout=timedelta(days=1)), *ORDER.steps],
        )
    )
    d.start()
    assert d.step("confirm") is StepStatus.RUNNING
    assert _outstanding(d) == []
