"""Every runtime, on generated sagas, against the reference model.

A few fixed seeds per runtime, each 24 sagas started at once with every kind of step
and behaviour mixed. ``python -m tests.generative run`` runs many more.
"""

from __future__ import annotations

import pytest

from sagakit import StepKind
from tests.generative.check import run_and_check
from tests.generative.runners import RUNNERS
from tests.generative.scenario import POISONS, Act, Family, Style, generate

#: Seeds run by ``make test``, on every runtime: together they generate every
#: behaviour in every style (test_the_seeds_cover_every_behaviour).
SEEDS = (12, 13)
RUNTIMES = [
    pytest.param(name, marks=[pytest.mark.postgres] if "postgres" in name else [])
    for name in RUNNERS
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_every_saga_ends_as_the_model_says(runtime: str, seed: int) -> None:
    runner = RUNNERS[runtime]
    result = await run_and_check(runner, generate(seed, runner.family))
    assert result.ok, (
        f"{result.report()}\n\nreplay: python -m tests.generative replay "
        f"--runtime {runtime} --seed {seed}"
    )


@pytest.mark.parametrize("family", list(Family))
def test_the_seeds_cover_every_behaviour(family: Family) -> None:
    seen: set[str] = set()
    for seed in SEEDS:
        for saga in generate(seed, family).sagas:
            seen.update({"start with data that is not JSON"} if saga.start_poison else set())
            for step in saga.steps:
                seen.add(f"kind {step.kind}" + (" as text" if step.kind_as_text else ""))
                seen.update(f"{b.act}:{b.style}" for b in step.actions)
                seen.update(f"poison {b.poison}" for b in step.actions if b.poison)
                seen.update(f"undo {b.act}" for b in step.undo)
                seen.update(flag for flag in ("optional", "skippable") if getattr(step, flag))
    acts = [act for act in Act if family is Family.ORCHESTRATED or act is not Act.SLEEP]
    kinds = [kind for kind in StepKind if kind is not StepKind.APPROVAL]
    wanted = {f"kind {kind}{text}" for kind in kinds for text in ("", " as text")}
    wanted |= {f"{act}:{style}" for act in acts for style in Style}
    wanted -= {f"{Act.OK}:{Style.BEFORE}"}  # a success writes its effect
    wanted |= {f"poison {name}" for name in POISONS}
    wanted |= {f"undo {act}" for act in acts if act is not Act.POISON}
    wanted.add("start with data that is not JSON")
    if family is Family.ORCHESTRATED:
        wanted |= {"optional", "skippable"}  # choreography reads no routing rules
    assert wanted <= seen, f"the seeds never generate {sorted(wanted - seen)}"
