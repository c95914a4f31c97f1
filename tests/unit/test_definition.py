"""Definitions: every rule is checked when the saga is defined, naming the step."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sagakit import DefinitionError, RetryPolicy, SagaDefinition, Step, StepKind, parallel
from tests.sagas import ORDER, TRIP


def comp(name: str) -> Step:
    return Step(name=name, participant="p", command=f"do_{name}", compensation=f"undo_{name}")


def pivot(name: str) -> Step:
    return Step(name=name, participant="p", command=f"do_{name}", kind=StepKind.PIVOT)


def retriable(name: str) -> Step:
    return Step(name=name, participant="p", command=f"do_{name}", kind=StepKind.RETRIABLE)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            [pivot("ship"), comp("refund_late")],
            "compensatable step 'refund_late' comes after the pivot",
        ),
        (
            [
                comp("a"),
                Step(
                    name="mail",
                    participant="p",
                    command="m",
                    compensation="unmail",
                    kind=StepKind.RETRIABLE,
                ),
            ],
            "retriable step 'mail' has a compensation",
        ),
        (
            [Step(name="reserve", participant="p", command="r")],
            "compensatable step 'reserve' has no compensation",
        ),
        ([comp("a"), comp("a")], "step 'a' is defined twice"),
        ([pivot("one"), pivot("two")], "step 'two' is a second pivot"),
        (
            [retriable("mail"), comp("late")],
            "compensatable step 'late' comes after retriable step 'mail'",
        ),
        ([retriable("mail"), pivot("ship")], "pivot 'ship' comes after retriable step 'mail'"),
        (
            [Step(name="p", participant="x", command="y", compensation="z", kind=StepKind.PIVOT)],
            "pivot 'p' has a compensation",
        ),
        ([parallel(comp("a"), pivot("b"))], "pivot 'b' cannot be in a parallel group"),
        ([parallel(comp("a"), retriable("b"))], "mixes step kinds"),
        ([], "needs at least one step"),
        (
            [
                Step(
                    name="slow",
                    participant="p",
                    command="c",
                    compensation="u",
                    timeout=timedelta(0),
                )
            ],
            "step 'slow' needs a positive timeout",
        ),
    ],
)
def test_invalid_definitions_fail_when_defined_naming_the_step(steps: list, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        SagaDefinition("bad", steps=steps)


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(DefinitionError, match="attempts must be at least 1"):
        RetryPolicy(attempts=0)
    with pytest.raises(DefinitionError, match="multiplier"):
        RetryPolicy(multiplier=0.5)


def test_retry_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(
        attempts=10, backoff=timedelta(seconds=1), multiplier=2, cap=timedelta(seconds=5)
    )
    assert [policy.delay(n).total_seconds() for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert policy.allows_another(9) and not policy.allows_another(10)


def test_retriable_steps_default_to_retrying_until_they_succeed() -> None:
    assert retriable("mail").policy.attempts is None
    assert comp("x").policy.attempts == 3


def test_stages_and_lookup() -> None:
    assert [len(stage) for stage in TRIP.stages] == [1, 2, 1]
    assert TRIP.stage_of("car") == 1
    assert TRIP.step("pay").kind is StepKind.PIVOT
    with pytest.raises(KeyError, match="no step 'boat'"):
        TRIP.step("boat")


def test_renders_as_text() -> None:
    text = ORDER.render_text()
    assert text.splitlines()[0] == "saga order v1"
    assert "ship [pivot]" in text
    assert "undo: payment.refund" in text
    assert "retried until it succeeds" in text


def test_renders_as_mermaid_with_parallel_branches_and_compensations() -> None:
    diagram = TRIP.render_mermaid()
    assert diagram.startswith("flowchart LR")
    assert "s_flight --> s_hotel" in diagram
    assert "s_flight --> s_car" in diagram
    assert "s_hotel --> s_pay" in diagram and "s_car --> s_pay" in diagram
    assert 's_pay{{"pay<br/>bank.charge"}}' in diagram
    assert "s_car -. return .-> undone" in diagram


def test_a_kind_given_as_its_string_value_is_that_kind_and_checked_the_same() -> None:
    def step(name: str, kind: str, compensation: str | None = None) -> Step:
        return Step(
            name=name,
            participant="p",
            command=f"do_{name}",
            compensation=compensation,
            kind=kind,  # type: ignore[arg-type]
        )

    assert step("ship", "pivot").kind is StepKind.PIVOT
    with pytest.raises(DefinitionError, match="'b' is a second pivot"):
        SagaDefinition("x", steps=[step("a", "pivot"), step("b", "pivot")])
    with pytest.raises(DefinitionError, match="pivot 'a' has a compensation"):
        SagaDefinition("x", steps=[step("a", "pivot", "undo")])
    with pytest.raises(DefinitionError, match="compensatable step 'a' has no compensation"):
        SagaDefinition("x", steps=[step("a", "compensatable")])


@pytest.mark.parametrize("kind", ["pivto", "PIVOT", "", 3, None])
def test_a_kind_that_is_no_kind_is_refused_naming_the_step(kind: object) -> None:
    with pytest.raises(DefinitionError, match=r"step 'ship': kind .* is none of 'compensatable'"):
        Step(name="ship", participant="p", command="go", kind=kind)  # type: ignore[arg-type]


def test_a_timeout_that_is_not_a_timedelta_is_refused_naming_the_step() -> None:
    with pytest.raises(DefinitionError, match=r"step 'ship': timeout must be a timedelta .* int 5"):
        Step(name="ship", participant="p", command="go", timeout=5)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="retry backoff must be a timedelta"):
        RetryPolicy(backoff=0.2)  # type: ignore[arg-type]
