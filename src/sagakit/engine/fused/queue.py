"""What a fused engine has to run: starts and step commands, and how they are cut into
batches (one transaction each) so that no saga is in two batches at once."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sagakit.model.messages import Envelope


@dataclass(slots=True)
class Start:
    """A saga to start; its first steps run in the start's own transaction."""

    definition: str
    data: Mapping[str, Any]
    saga_id: str
    key: str | None
    version: int | None
    traceparent: str | None
    done: asyncio.Future[str]
    #: A batch with this start in it conflicted: look for the saga in the store first.
    doubted: bool = False


@dataclass(slots=True)
class Batch:
    """What one transaction runs."""

    starts: list[Start] = field(default_factory=list)
    commands: list[Envelope] = field(default_factory=list)

    @property
    def saga_ids(self) -> list[str]:
        return [e.saga_id for e in self.commands] + [s.saga_id for s in self.starts]


class StepQueue:
    """Starts and commands waiting for a batch.

    A saga is in at most one batch at a time (``busy``): its cached state is only ever
    changed by one transaction. A saga whose handler was too slow for a shared batch
    (``alone``) gets its next batch to itself."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.starts: deque[Start] = deque()
        self.commands: deque[Envelope] = deque()
        self.busy: set[str] = set()
        self.alone: set[str] = set()
        #: Set when there is work for the shared batches, and for the lone ones.
        self.wake = asyncio.Event()
        self.lone_wake = asyncio.Event()

    def __bool__(self) -> bool:
        return bool(self.starts or self.commands)

    @property
    def has_alone(self) -> bool:
        """Whether a step too slow for a shared batch waits for its own."""
        return any(e.saga_id in self.alone for e in self.commands) or any(
            s.saga_id in self.alone for s in self.starts
        )

    def held(self) -> set[str]:
        """The sagas with a start or a step queued or running here."""
        held = {env.saga_id for env in self.commands}
        held.update(item.saga_id for item in self.starts)
        held.update(self.busy)
        return held

    def put_start(self, start: Start) -> None:
        self.starts.append(start)
        self.wake.set()

    def put_command(self, env: Envelope) -> None:
        self.commands.append(env)
        self._wake_for(env.saga_id)

    def _wake_for(self, saga_id: str) -> None:
        (self.lone_wake if saga_id in self.alone else self.wake).set()

    def take(self, *, alone: bool = False) -> Batch:
        """Up to ``size`` steps, none of a saga another batch holds; with ``alone``, the
        one step of a saga too slow for a shared batch (or nothing)."""
        batch = Batch()
        if alone:
            self._take_alone(batch)
            return batch
        held: list[Envelope] = []
        mine: set[str] = set()
        while self.commands and len(batch.commands) < self.size:
            env = self.commands.popleft()
            busy = env.saga_id in self.busy and env.saga_id not in mine
            if busy or env.saga_id in self.alone:
                held.append(env)
                continue
            self.busy.add(env.saga_id)
            mine.add(env.saga_id)
            batch.commands.append(env)
        self.commands.extendleft(reversed(held))
        waiting: list[Start] = []
        while self.starts and len(batch.starts) + len(batch.commands) < self.size:
            item = self.starts.popleft()
            if item.saga_id in self.busy or item.saga_id in self.alone:
                waiting.append(item)
                continue
            self.busy.add(item.saga_id)
            batch.starts.append(item)
        self.starts.extendleft(reversed(waiting))
        return batch

    def _take_alone(self, batch: Batch) -> bool:
        """Fill ``batch`` with the one step of a saga whose handler was too slow for a
        shared batch, if one is queued and free; say whether it did."""
        for env in self.commands:
            if env.saga_id in self.alone and env.saga_id not in self.busy:
                self.commands.remove(env)
                batch.commands.append(env)
                break
        else:
            for item in self.starts:
                if item.saga_id in self.alone and item.saga_id not in self.busy:
                    self.starts.remove(item)
                    batch.starts.append(item)
                    break
            else:
                return False
        saga_id = batch.saga_ids[0]
        self.alone.discard(saga_id)
        self.busy.add(saga_id)
        return True

    def done(self, batch: Batch) -> None:
        """``batch`` has finished, committed or not: its sagas are free again."""
        self.busy.difference_update(batch.saga_ids)
        if self:
            self.wake.set()
        if self.has_alone:
            self.lone_wake.set()

    def requeue(self, batch: Batch) -> None:
        """Run ``batch`` again, ahead of what came after it."""
        self.commands.extendleft(reversed(batch.commands))
        self.starts.extendleft(reversed(batch.starts))
        self.wake.set()
        if self.has_alone:
            self.lone_wake.set()

    def refuse_waiting(self, why: str) -> None:
        """Starts that will never be taken: their callers must not wait for ever."""
        while self.starts:
            item = self.starts.popleft()
            if not item.done.done():
                item.done.set_exception(RuntimeError(why))
