"""The reference model on hand-written sagas: each case is a rule of the docs, told as a
story, so that the model the generative test trusts is itself checked."""

from __future__ import annotations

from collections import Counter

import pytest

from sagakit import StepKind
from tests.generative.model import NOT_STARTED, predict
from tests.generative.scenario import (
    Act,
    Behaviour,
    Family,
    SagaCase,
    Scenario,
    StepCase,
    Style,
    generate,
)

OK = Behaviour(Act.OK, Style.WRITE)
OK_REPLY = Behaviour(Act.OK, Style.CONNECTION, reply=True)
REFUSE = Behaviour(Act.REFUSE, Style.CONNECTION)
RAISE = Behaviour(Act.RAISE, Style.WRITE)
SLEEP = Behaviour(Act.SLEEP, Style.CONNECTION)
POISON = Behaviour(Act.POISON, Style.WRITE, poison="nan")
UNDO_FAILS = Behaviour(Act.TRANSIENT, Style.BEFORE)


def step(
    name: str,
    kind: StepKind,
    *actions: Behaviour,
    attempts: int | None = 3,
    undo: tuple[Behaviour, ...] = (OK,),
    undo_attempts: int = 3,
    **flags: bool,
) -> StepCase:
    return StepCase(
        name=name,
        participant="p0",
        kind=kind,
        timeout=0.5,
        attempts=attempts,
        backoff=0.01,
        actions=actions,
        undo=undo if kind is StepKind.COMPENSATABLE else (),
        undo_attempts=undo_attempts,
        **flags,
    )


def saga(*steps: StepCase, required: set[str] = set(), skipped: set[str] = set()) -> SagaCase:  # noqa: B006 - never changed
    return SagaCase("s", "g", steps, frozenset(required), frozenset(skipped))


C, P, R = StepKind.COMPENSATABLE, StepKind.PIVOT, StepKind.RETRIABLE


def effects(*names: str) -> Counter[tuple[str, str]]:
    """``"a"`` is a's action, ``"-a"`` its compensation."""
    return Counter((n.lstrip("-"), "undo" if n.startswith("-") else "do") for n in names)


def test_a_saga_whose_steps_succeed_completes_with_each_effect_once() -> None:
    told = predict(saga(step("a", C, RAISE, OK_REPLY), step("b", P, OK)), Family.ORCHESTRATED)
    assert told.status == "completed"
    assert told.effects == effects("a", "b")
    assert told.data["a_reply"] == "s/a"


def test_a_refusal_compensates_what_ran_in_reverse_and_leaves_no_effect_of_its_own() -> None:
    told = predict(
        saga(step("a", C, OK), step("b", C, OK), step("c", C, REFUSE)), Family.ORCHESTRATED
    )
    assert told.status == "compensated"
    assert told.effects == effects("a", "b", "-a", "-b")
    assert told.story[-2:] == ["undo b: done after 1 try", "undo a: done after 1 try"]


def test_a_step_that_runs_out_of_tries_is_undone_with_nothing_to_undo() -> None:
    told = predict(saga(step("a", C, OK), step("b", C, RAISE, attempts=2)), Family.ORCHESTRATED)
    assert told.status == "compensated"
    assert told.effects == effects("a", "-a")  # b's null compensation writes nothing


def test_a_handler_past_its_timeout_is_a_failed_try() -> None:
    twice = saga(step("a", C, OK), step("b", C, SLEEP, SLEEP, OK, attempts=2))
    assert predict(twice, Family.ORCHESTRATED).status == "compensated"
    thrice = saga(step("a", C, OK), step("b", C, SLEEP, SLEEP, OK, attempts=3))
    assert predict(thrice, Family.ORCHESTRATED).effects == effects("a", "b")


def test_a_pivot_that_runs_out_of_tries_needs_attention_but_a_refused_one_turns_back() -> None:
    out = predict(saga(step("a", C, OK), step("p", P, SLEEP, attempts=2)), Family.ORCHESTRATED)
    assert (out.status, out.effects) == ("needs_attention", effects("a"))
    refused = predict(saga(step("a", C, OK), step("p", P, REFUSE)), Family.ORCHESTRATED)
    assert (refused.status, refused.effects) == ("compensated", effects("a", "-a"))


def test_a_reply_that_is_not_json_fails_the_step_at_once() -> None:
    poisoned = saga(step("a", C, OK), step("b", C, POISON, OK, attempts=5))
    assert predict(poisoned, Family.ORCHESTRATED).effects == effects("a", "-a")
    after_pivot = saga(step("p", P, OK), step("r", R, POISON, OK, attempts=None))
    assert predict(after_pivot, Family.ORCHESTRATED).status == "needs_attention"


def test_a_saga_whose_data_is_not_json_is_never_started() -> None:
    case = SagaCase("s", "g", (step("a", C, OK),), start_poison="decimal")
    told = predict(case, Family.ORCHESTRATED)
    assert (told.status, told.effects) == (NOT_STARTED, Counter())


def test_after_the_pivot_nothing_is_undone() -> None:
    told = predict(
        saga(step("a", C, OK), step("p", P, OK), step("r", R, REFUSE)), Family.ORCHESTRATED
    )
    assert (told.status, told.effects) == ("needs_attention", effects("a", "p"))


def test_a_compensation_that_keeps_failing_needs_attention_and_stops_the_undoing() -> None:
    told = predict(
        saga(
            step("a", C, OK),
            step("b", C, OK, undo=(UNDO_FAILS, OK), undo_attempts=1),
            step("c", C, OK),
            step("d", C, REFUSE),
        ),
        Family.ORCHESTRATED,
    )
    assert told.status == "needs_attention"
    assert told.effects == effects("a", "b", "c", "-c")  # a is never reached


def test_routing_rules_decide_optional_and_skipped_steps_and_choreography_reads_none() -> None:
    case = saga(
        step("a", C, OK, optional=True),
        step("b", C, OK, optional=True),
        step("c", C, OK, skippable=True),
        required={"a"},
        skipped={"c"},
    )
    assert predict(case, Family.ORCHESTRATED).effects == effects("a")
    assert predict(case, Family.CHOREOGRAPHED).effects == effects("c")


def test_choreography_retries_by_redelivery_not_by_the_retry_policy() -> None:
    case = saga(step("a", C, RAISE, RAISE, OK, attempts=1))
    assert predict(case, Family.ORCHESTRATED).status == "compensated"
    assert predict(case, Family.CHOREOGRAPHED).status == "completed"


@pytest.mark.parametrize("family", list(Family))
def test_every_generated_saga_is_valid_and_ends(family: Family) -> None:
    for seed in range(40):
        scenario = generate(seed, family)
        assert Scenario.from_json(scenario.to_json()) == scenario
        for case in scenario.sagas:
            case.to_definition()  # a DefinitionError here is the generator's bug
            ends = {"completed", "compensated", "needs_attention", NOT_STARTED}
            assert predict(case, family).status in ends
