"""The long run: many more seeds than ``make test`` runs, for as long as asked.

::

    python -m tests.generative run --seeds 500 --minutes 10
    python -m tests.generative run --runtime fused-postgres --without sleep,poison
    python -m tests.generative replay --runtime fused-sqlite --seed 17
    python -m tests.generative replay --runtime fused-sqlite --case .sagakit/generative/x.json
    python -m tests.generative show --seed 17

Each failing seed is printed with what disagreed, shrunk (fewer sagas, steps and
tries that still fail the same way) and saved as a JSON case that ``replay`` runs
again. Runtimes whose server is unreachable are left out, saying so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Annotated

import pytest
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from tests.generative.check import Result, predictions, run_and_check
from tests.generative.runners import RUNNERS, Runner
from tests.generative.scenario import Family, Knobs, Scenario, generate, render_saga
from tests.generative.shrink import shrink

app = typer.Typer(
    help="The generative, model-checked test of sagakit's runtimes, at length.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False, soft_wrap=True)

RuntimeOption = Annotated[
    list[str] | None,
    typer.Option("--runtime", "-r", help=f"Runtimes to use (default all): {', '.join(RUNNERS)}"),
]
WithoutOption = Annotated[
    str,
    typer.Option(
        help="Behaviours never generated, e.g. sleep,poison,raise:connection (to look past "
        "a known defect)"
    ),
]
SagasOption = Annotated[int, typer.Option(help="Sagas per run, started at once")]


def _knobs(sagas: int, without: str) -> Knobs:
    left_out = [word.strip() for word in without.split(",") if word.strip()]
    try:
        return Knobs.without(*left_out, sagas=sagas)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _runners(names: list[str] | None) -> list[Runner]:
    wanted = names or list(RUNNERS)
    unknown = [name for name in wanted if name not in RUNNERS]
    if unknown:
        raise typer.BadParameter(f"unknown runtimes {unknown}; choose from {list(RUNNERS)}")
    return [RUNNERS[name] for name in wanted]


@app.command()
def run(
    seeds: Annotated[int, typer.Option(help="How many seeds per runtime")] = 100,
    start: Annotated[int, typer.Option(help="The first seed")] = 1000,
    minutes: Annotated[float, typer.Option(help="Stop starting runs after this long")] = 10.0,
    runtime: RuntimeOption = None,
    sagas: SagasOption = 24,
    without: WithoutOption = "",
    shrink_minutes: Annotated[
        float, typer.Option(help="Time to shrink each failure (0: none)")
    ] = 2.0,
    out: Annotated[Path, typer.Option(help="Where failing cases are written")] = Path(
        ".sagakit/generative"
    ),
    first: Annotated[
        bool, typer.Option("--first", help="Leave a runtime out after its first failure")
    ] = False,
) -> None:
    """Run seeds on every runtime until done or out of time; exit 1 if any failed."""
    logging.disable(logging.CRITICAL)  # the handlers fail on purpose, loudly
    knobs = _knobs(sagas, without)
    failed = asyncio.run(
        _run_many(
            _runners(runtime),
            range(start, start + seeds),
            minutes,
            knobs,
            shrink_minutes,
            out,
            first=first,
        )
    )
    raise typer.Exit(1 if failed else 0)


async def _run_many(
    runners: list[Runner],
    seeds: range,
    minutes: float,
    knobs: Knobs,
    shrink_minutes: float,
    out: Path,
    *,
    first: bool = False,
) -> int:
    deadline = time.monotonic() + minutes * 60
    failed = 0
    ran = 0
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[failed]} failed"),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("starting", total=len(seeds) * len(runners), failed=0)
        for seed in seeds:
            if not runners:
                break
            for runner in list(runners):
                if time.monotonic() > deadline:
                    progress.console.print(f"out of time after {ran} run(s)")
                    return failed
                progress.update(task, description=f"seed {seed} on {runner.name}")
                try:
                    result = await run_and_check(runner, generate(seed, runner.family, knobs))
                except pytest.skip.Exception as exc:
                    progress.console.print(f"leaving out {runner.name}: {exc}")
                    runners.remove(runner)
                    continue
                ran += 1
                if not result.ok:
                    failed += 1
                    await _tell(result, runner, progress.console, shrink_minutes, out)
                    if first:
                        runners.remove(runner)
                progress.update(task, advance=1, failed=failed)
    console.print(f"{ran} run(s), {failed} failed")
    return failed


async def _tell(
    result: Result, runner: Runner, out_console: Console, shrink_minutes: float, out: Path
) -> None:
    out_console.rule(f"seed {result.scenario.seed} failed on {runner.name}")
    out_console.print(result.report(limit=3), markup=False)
    smallest = result
    if shrink_minutes > 0:
        out_console.print("shrinking ...")
        smallest = await shrink(runner, result, seconds=shrink_minutes * 60, say=out_console.print)
        out_console.rule("the smallest reproduction found")
        out_console.print(smallest.scenario.render(), markup=False)
        out_console.print(smallest.report(), markup=False)
    case = _save(smallest.scenario, out / f"{runner.name}-seed{result.scenario.seed}.json")
    out_console.print(
        f"replay: python -m tests.generative replay --runtime {runner.name} --case {case}",
        markup=False,
    )


def _save(scenario: Scenario, case: Path) -> Path:
    case.parent.mkdir(parents=True, exist_ok=True)
    case.write_text(scenario.to_json())
    return case


@app.command()
def replay(
    runtime: Annotated[str, typer.Option("--runtime", "-r", help="The runtime to use")],
    seed: Annotated[int | None, typer.Option(help="Generate this seed's scenario")] = None,
    case: Annotated[Path | None, typer.Option(help="A JSON case written by run")] = None,
    keep: Annotated[str, typer.Option(help="Only these saga ids (comma-separated)")] = "",
    sagas: SagasOption = 24,
    without: WithoutOption = "",
    verbose: Annotated[bool, typer.Option(help="Show sagakit's logs")] = False,
) -> None:
    """Run one scenario again and print what the model and the run say."""
    if not verbose:
        logging.disable(logging.CRITICAL)
    else:
        logging.basicConfig(level=logging.INFO)
    runner = _runners([runtime])[0]
    scenario = _scenario(runner.family, seed, case, _knobs(sagas, without))
    if keep:
        scenario = scenario.keep(keep.split(","))
    result = asyncio.run(run_and_check(runner, scenario))
    if result.ok:
        console.print(
            f"{len(scenario.sagas)} saga(s) ended as the model says, in "
            f"{result.observation.seconds:.1f}s"
        )
        return
    console.print(result.report(limit=len(scenario.sagas)), markup=False)
    raise typer.Exit(1)


@app.command()
def show(
    seed: Annotated[int | None, typer.Option(help="Generate this seed's scenario")] = None,
    case: Annotated[Path | None, typer.Option(help="A JSON case written by run")] = None,
    family: Annotated[Family, typer.Option(help="Who drives the sagas")] = Family.ORCHESTRATED,
    sagas: SagasOption = 24,
    without: WithoutOption = "",
) -> None:
    """Print a scenario and how the model says each saga ends (runs nothing)."""
    scenario = _scenario(family, seed, case, _knobs(sagas, without))
    told = predictions(scenario)
    console.print(scenario.render().splitlines()[0], markup=False)
    for saga in scenario.sagas:
        prediction = told[saga.saga_id]
        console.print(render_saga(saga, scenario.family), markup=False)
        console.print(f"  -> {prediction.status}: " + "; ".join(prediction.story), markup=False)


def _scenario(family: Family, seed: int | None, case: Path | None, knobs: Knobs) -> Scenario:
    if case is not None:
        return Scenario.from_json(case.read_text())
    if seed is None:
        raise typer.BadParameter("give --seed or --case")
    return generate(seed, family, knobs)


if __name__ == "__main__":
    app()
