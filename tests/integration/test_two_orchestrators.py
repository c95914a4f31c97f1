"""Two orchestrator processes on one PostgreSQL never both decide the same reply."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from sagakit import Orchestrator, StartRequest, open_store
from sagakit.model.messages import Envelope, MessageKind, ReplyBody, new_id
from sagakit.testing import forward_only
from tests.sagas import ORDER

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
async def test_two_orchestrator_processes_decide_each_reply_once(
    pg_url: str, tmp_path: Path
) -> None:
    store = open_store(pg_url)
    await store.migrate()
    orchestrator = Orchestrator(store, [ORDER])
    ids = await orchestrator.start_many(
        [StartRequest("order", {"n": i}, saga_id=f"race-{i}") for i in range(150)]
    )
    replies = []
    async with store.claim_outbox(limit=1000) as claim:
        for row in claim.rows:
            command = Envelope.from_bytes(row.message.body)
            replies.append(
                Envelope(
                    message_id=new_id(),
                    type=f"{command.type}.reply",
                    kind=MessageKind.REPLY,
                    saga_id=command.saga_id,
                    causation_id=command.message_id,
                    created_at=1.0,
                    step=command.step,
                    op=command.op,
                    attempt=command.attempt,
                    payload=ReplyBody(ok=True).model_dump(),
                ).model_dump_json()
            )
        claim.mark_sent([row.id for row in claim.rows])
    path = tmp_path / "replies.json"
    path.write_text(json.dumps(replies))
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.race_worker",
            pg_url,
            str(path),
            str(seed),
            cwd=ROOT,
        )
        for seed in (1, 2)
    ]
    codes = await asyncio.wait_for(asyncio.gather(*(w.wait() for w in workers)), timeout=120)
    assert codes == [0, 0]
    for saga_id in ids:
        history = await store.history(saga_id)
        assert [e.type for e in history] == [
            "SagaStarted",
            "StepRequested",
            "StepSucceeded",
            "StepRequested",
        ], saga_id
        assert forward_only(saga_id, history) == []
    async with store.unit() as unit:
        commands = await unit.connection.scalar(text("SELECT count(*) FROM saga_outbox"))
        claimed = await unit.connection.scalar(text("SELECT count(*) FROM saga_inbox"))
    assert commands == 2 * len(ids)  # one reserve and one charge per saga, never two
    assert claimed == len(ids)
    await store.close()
