"""Deciding one batch from an orchestrator's queue inside one unit of work.

The batch's inbox rows are claimed and its sagas loaded together; each reply, operator
action or signal not decided before is decided for its saga (several for one saga merge
into one decision), each start message starts its saga once, and what cannot be
decided is rejected with the reason a person reads in the dead letters.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from sagakit.engine.orchestrator_messages import START_TYPE, StartBody, trigger_of
from sagakit.model.contracts import ContractError, broken_reply, check_start
from sagakit.model.decision import Decision, merge_decisions
from sagakit.model.messages import Envelope
from sagakit.model.triggers import Reply, Start
from sagakit.observe.logs import get_logger
from sagakit.ports import Delivery, Loaded, UnitOfWork

if TYPE_CHECKING:
    from sagakit.engine.orchestrator import Orchestrator

log = get_logger("sagakit.orchestrator")


async def decide_replies(
    orchestrator: Orchestrator, unit: UnitOfWork, replies: list[tuple[Delivery, Envelope]]
) -> list[Decision]:
    """Decide ``replies`` (checked already) in ``unit`` and append the decisions."""
    fresh, loaded = await unit.claim_and_load(
        orchestrator.consumer, [(env.message_id, env.saga_id) for _, env in replies]
    )
    now = await orchestrator.now_in(unit)
    decisions: dict[str, Decision] = {}
    seen: set[str] = set()
    for delivery, env in replies:
        if env.message_id not in fresh or env.message_id in seen:
            log.debug("duplicate reply ignored", saga_id=env.saga_id, step=env.step)
            continue
        seen.add(env.message_id)
        if env.type == START_TYPE:
            started = await _start_from(
                orchestrator, unit, delivery, env, loaded=loaded, decisions=decisions, now=now
            )
            if started is not None:
                decisions[env.saga_id] = started
            continue
        trigger = trigger_of(env)
        state = decisions[env.saga_id].state if env.saga_id in decisions else None
        state = state or loaded.states.get(env.saga_id)
        if state is None:
            broken = loaded.broken.get(env.saga_id)
            if broken is not None:
                log.error(str(broken), saga_id=env.saga_id)
                delivery.reject("corrupt_log", str(broken))
            else:
                delivery.reject("unknown_saga", f"no saga {env.saga_id!r} in this store")
            continue
        try:
            definition = orchestrator.definition(state.definition, state.definition_version)
        except LookupError as exc:
            delivery.reject("unknown_definition", str(exc))
            continue
        breach = broken_reply(definition, env) if isinstance(trigger, Reply) else None
        if breach is not None and isinstance(trigger, Reply):
            delivery.reject("contract", breach)  # kept for a person; the step fails now
            trigger = replace(trigger, broken=breach)
        decision = await orchestrator.decide_in(
            unit, definition, state, trigger, now=now, traceparent=env.traceparent
        )
        decisions[env.saga_id] = merge_decisions(decisions.get(env.saga_id), decision)
    await unit.append(list(decisions.values()))
    return list(decisions.values())


async def _start_from(
    orchestrator: Orchestrator,
    unit: UnitOfWork,
    delivery: Delivery,
    env: Envelope,
    *,
    loaded: Loaded,
    decisions: dict[str, Decision],
    now: float,
) -> Decision | None:
    body = StartBody.model_validate(env.payload)
    if env.saga_id in loaded.states or env.saga_id in loaded.broken or env.saga_id in decisions:
        return None  # already started: starting is idempotent
    try:
        definition = orchestrator.definition(body.definition, body.version)
        check_start(definition, body.data)
    except LookupError as exc:
        delivery.reject("unknown_definition", str(exc))
        return None
    except ContractError as exc:
        delivery.reject("contract", exc.reason)
        return None
    trigger = Start(env.saga_id, body.data, body.key, env.traceparent)
    return await orchestrator.decide_in(unit, definition, None, trigger, now=now)
