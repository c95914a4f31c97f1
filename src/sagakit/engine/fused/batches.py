"""How a fused engine settles a batch it ran as one transaction: committed, its starts
are answered, its sagas' states kept or dropped and the steps that follow queued; rolled
back, it is queued again, ahead of what came after it, and why is counted."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Mapping

from sagakit.engine.batching import HandlerTimedOut, HandlerTooSlow, Unbatch
from sagakit.engine.fused.queue import Batch, StepQueue
from sagakit.engine.fused.recovery import Recovery
from sagakit.engine.fused.transaction import Transactions, TurnTimeout
from sagakit.engine.orchestrator import Orchestrator
from sagakit.errors import ConcurrencyError, StoreError
from sagakit.model.decision import Decision
from sagakit.model.messages import Outgoing
from sagakit.observe.logs import get_logger

log = get_logger("sagakit.fused")

_FAILED_BATCH_PAUSE = 0.05


class BatchRunner:
    """Runs a batch through the engine's :class:`Transactions` and deals with how it ended."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        queue: StepQueue,
        transactions: Transactions,
        recovery: Recovery,
    ) -> None:
        self.orchestrator = orchestrator
        self.queue = queue
        self.transactions = transactions
        self.recovery = recovery
        #: Transactions committed.
        self.committed = 0
        #: Batches rolled back and run again, by why: "conflict" (another writer, or a
        #: transient database error), "unbatch" (Unbatch), "timeout" (a handler ran past
        #: its step's timeout), "slow" (a handler kept its batch waiting and runs alone
        #: next), "turn" (waited too long for the turn), "error".
        self.retries: Counter[str] = Counter()

    async def run(self, batch: Batch) -> None:
        try:
            decisions, onward = await self.transactions.run(batch)
        except (HandlerTimedOut, HandlerTooSlow, TurnTimeout, Unbatch) as again:
            self._forget(batch)
            self.queue.requeue(batch)
            await self._again(again)
            return
        except (ConcurrencyError, StoreError) as exc:
            # Another writer moved a saga, or the database hiccuped: forget what is
            # cached about these sagas and run the batch again from the store.
            retry = isinstance(exc, ConcurrencyError) or exc.retryable
            self.retries["conflict" if retry else "error"] += 1
            self._forget(batch)
            if isinstance(exc, ConcurrencyError):
                for item in batch.starts:
                    item.doubted = True
            if not retry:
                log.exception("fused batch failed; trying it again shortly")
            self.queue.requeue(batch)
            await asyncio.sleep(0 if retry else _FAILED_BATCH_PAUSE)
            return
        except Exception as exc:
            self.retries["error"] += 1
            log.exception("fused batch failed; trying it again shortly")
            self._forget(batch)
            for item in batch.starts:
                if not item.done.done():
                    item.done.set_exception(exc)
            self.queue.busy.difference_update(s.saga_id for s in batch.starts)
            batch.starts.clear()
            self.queue.requeue(batch)
            await asyncio.sleep(_FAILED_BATCH_PAUSE)
            return
        self._committed(batch, decisions, onward)

    async def _again(self, why: BaseException) -> None:
        """A batch rolled back to run again, for one of the reasons that is no fault of
        the batch as a whole: count it, and set up what its next run needs."""
        if isinstance(why, HandlerTimedOut):
            self.retries["timeout"] += 1  # its participant answers it, unrun, next time
        elif isinstance(why, HandlerTooSlow):
            # It runs next in a batch of its own; the rest run again without waiting.
            self.retries["slow"] += 1
            self.queue.alone.add(why.step.split("/", 1)[0])
            self.queue.lone_wake.set()
        elif isinstance(why, Unbatch):
            self.retries["unbatch"] += 1
            self.transactions.unbatched.update(why.saga_ids)
        else:
            # Rolled back, so whatever waited on this transaction's locks goes on; a
            # short random pause keeps the two from meeting the same way again.
            self.retries["turn"] += 1
            log.warning("a fused batch waited too long for the turn; running it again")
            await asyncio.sleep(random.uniform(0.01, 0.05))  # noqa: S311 - not for secrets

    def _committed(
        self, batch: Batch, decisions: list[Decision], onward: Mapping[str, list[Outgoing]]
    ) -> None:
        self.committed += 1
        self.orchestrator.committed(decisions)
        tx = self.transactions
        if tx.unbatched:
            tx.unbatched -= {d.state.saga_id for d in decisions}
        for env in batch.commands:
            self.recovery.ran(env.message_id)
            tx.unwritten.discard(env.message_id)
        for item in batch.starts:
            if not item.done.done():
                item.done.set_result(item.saga_id)
        for decision in decisions:
            state = decision.state
            unwritten = onward.get(state.saga_id, [])
            tx.unwritten.update(c.envelope.message_id for c in unwritten)
            local = [c for c in decision.commands if c.destination in tx.by_queue]
            local.extend(unwritten)
            # Only a saga whose next step runs here keeps its state in memory: one that
            # waits (an approval, a retry's backoff, a long timer) is read back from the
            # store when it moves, so waiting sagas cost no memory here.
            if local and not state.status.terminal:
                tx.states[state.saga_id] = state
            else:
                tx.states.pop(state.saga_id, None)
            for out in local:
                self.recovery.queue_command(out.envelope, unwritten=False)

    def _forget(self, batch: Batch) -> None:
        for saga_id in batch.saga_ids:
            self.transactions.states.pop(saga_id, None)
