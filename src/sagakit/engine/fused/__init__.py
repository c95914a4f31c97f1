"""The fused path: an orchestrator whose participants all live in its process and share
its store, run by ``Runtime.fuse``.

When a participant's tables and the orchestrator's log are in one database, the hop
between them needs no transport and no second transaction. The fused engine runs each
step as ONE local transaction holding, together: the participant's inbox row (the
barrier), its business writes, the orchestrator's decision on the outcome (log events,
projection) and the next command. Many sagas' steps share a transaction under load, so
a saga of N steps costs at most N commits, and far fewer per saga when many run at once.

Nothing about the guarantees changes; the transaction boundaries only widen:

* the next step's command is not written to the outbox: the same transaction appends
  its request to the saga's log (``StepRequested``: message id, attempt, and the data
  the payload is made of), and this process runs it from memory. An engine that starts
  rebuilds every request of its participants still unanswered in the log and runs it
  (:func:`sagakit.model.decide.outstanding`); the inbox turns a second run into the stored
  outcome. Commands from anywhere else (a timer's retry, a lock release) still come
  through the outbox, and the transaction that runs one marks it sent; what the outbox
  holds for the orchestrator (an operator's action, a start message) is handed to it in
  this process. Another engine on the same store does not take over a dead one's steps
  while it runs; their deadlines retry them through the outbox;
* saga states are cached between steps, but every append is checked against the log's
  version (a primary key), so a timer or another process that moved a saga meanwhile
  makes the batch roll back and run again from the store;
* decisions are the orchestrator's own (``Orchestrator.decide_in``: its clock, its
  routing rules, its spans, metrics and story);
* a handler gets a savepoint at its first statement; the writes it hands to
  ``StepContext.write`` wait in the batch and go out grouped, each group of the same
  statement as one pipelined ``executemany`` (see :mod:`sagakit.engine.batching`);
* rows other sagas share are written by one transaction at a time, from its first
  statement that may lock one to just before its COMMIT (the engine's *turn*, see
  :mod:`sagakit.engine.fused.transaction`), so the turn and the database's locks never make a
  cycle the database cannot see.
"""

from __future__ import annotations

from sagakit.engine.fused.engine import FusedEngine


def __getattr__(name: str) -> object:
    if name == "FusedRuntime":
        raise ImportError(
            "FusedRuntime is gone: the fused path is a way Runtime runs participants. "
            "Use Runtime().fuse(orchestrator, *participants), start sagas with "
            "orchestrator.start(...) and wait with handle.outcome()."
        )
    raise AttributeError(f"module 'sagakit.engine.fused' has no attribute {name!r}")


__all__ = ["FusedEngine"]
