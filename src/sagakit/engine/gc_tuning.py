"""Python's garbage collector, set for the way a runtime allocates.

A saga step makes many small containers (events, envelopes, rows, states) that die
young by reference counting; the cyclic collector rarely finds anything among them.
With Python's default thresholds it still runs a young collection every 700 net
allocations and, every hundred of those, walks every object the process holds: its
imports, definitions and compiled statements, about 75,000 of them in a runtime's
process. On the fused fast path that was about a seventh of the process's CPU
(``bench/README.md``).

A runtime that starts calls :func:`tune` once per process: it collects what start-up
left, freezes what survives (the collector stops walking it, as ``gc.freeze`` is meant
for), and raises the thresholds. It only ever raises them, so a process that set
higher ones keeps its own; pass ``tune_collector=False`` to a runtime to leave the
collector alone altogether.
"""

from __future__ import annotations

import gc

#: Young-generation threshold, then how many collections of each generation run one of
#: the next: a young collection about 70 times less often than Python's default.
THRESHOLDS = (50_000, 20, 100)

_tuned: list[bool] = []  # non-empty once tune() has run in this process


def tune() -> bool:
    """Freeze what the process holds now and raise the thresholds; once per process.
    Return whether this call changed anything."""
    if _tuned:
        return False
    _tuned.append(True)
    gc.collect()
    gc.freeze()
    current = gc.get_threshold()
    gc.set_threshold(*(max(now, wanted) for now, wanted in zip(current, THRESHOLDS, strict=True)))
    return True
