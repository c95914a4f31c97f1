"""A choreography's topology: which event runs which step, and the queues that carry them.

A definition compiles into routes: each step's action reacts to the success of the step
before it (the first step to the saga's ``started`` event); each compensatable step's
compensation reacts to the failure or compensation of the step after it. Routing keys
read ``<saga>.started``, ``<saga>.<step>.succeeded``, ``<saga>.<step>.failed`` and
``<saga>.<step>.compensated``; each participant follows its routes on a queue of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from sagakit.errors import DefinitionError
from sagakit.model.definition import SagaDefinition, Step, StepKind
from sagakit.model.messages import Op, follower_queue, routing_key, tracker_queue


@dataclass(frozen=True, slots=True)
class Route:
    """Run ``step``'s action or compensation when an event with ``trigger`` arrives."""

    trigger: str
    definition: SagaDefinition
    step: Step
    op: Op

    @property
    def command(self) -> str:
        command = self.step.command if self.op == "action" else self.step.compensation
        assert command is not None  # compensation routes exist only for compensatable steps
        return command


def compile_routes(definition: SagaDefinition) -> list[Route]:
    """The event routes that run ``definition`` without a coordinator. Optional steps are
    left out: with no coordinator to evaluate routing rules, they never run."""
    check_choreographable(definition)
    steps = [step for step in definition.steps if not step.optional]
    routes: list[Route] = []
    for index, step in enumerate(steps):
        before = None if index == 0 else steps[index - 1].name
        trigger = routing_key(definition.name, before, "succeeded")
        routes.append(Route(trigger, definition, step, "action"))
        if step.kind is StepKind.COMPENSATABLE and index + 1 < len(steps):
            after = steps[index + 1]
            # A retriable step's failure undoes nothing (the saga needs a person, as
            # orchestrated): only a compensatable step or the pivot failing turns back.
            outcomes = [] if after.kind is StepKind.RETRIABLE else ["failed"]
            if after.kind is StepKind.COMPENSATABLE:
                outcomes.append("compensated")
            routes.extend(
                Route(
                    routing_key(definition.name, after.name, outcome),
                    definition,
                    step,
                    "compensation",
                )
                for outcome in outcomes
            )
    return routes


def check_choreographable(definition: SagaDefinition) -> None:
    where = f"saga {definition.name!r} v{definition.version}"
    if "." in definition.name:
        raise DefinitionError(f"{where}: a choreographed saga's name may not contain '.'")
    for stage in definition.stages:
        if len(stage) > 1:
            names = ", ".join(repr(s.name) for s in stage)
            raise DefinitionError(
                f"{where}: parallel group {names} needs a coordinator to join its branches; "
                "run this saga orchestrated"
            )
        for step in stage:
            if step.kind is StepKind.APPROVAL and not step.optional:
                raise DefinitionError(
                    f"{where}: approval {step.name!r} waits for a person's answer, which only a "
                    "coordinator can take; run this saga orchestrated"
                )


# The wire's names for choreography (model.messages holds them beside the commands' and
# replies' queues) are importable from here as they were.
__all__ = [
    "Route",
    "check_choreographable",
    "compile_routes",
    "follower_queue",
    "routing_key",
    "tracker_queue",
]
