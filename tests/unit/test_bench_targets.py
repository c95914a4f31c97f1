"""Which targets the bench settles head to head, and how the settled ratio is read."""

from __future__ import annotations

from typing import Any

from bench.head_to_head import close_calls
from bench.report import targets


def _sweep(**best: tuple[float, int]) -> dict[str, Any]:
    systems: dict[str, Any] = {}
    for name, (throughput, concurrency) in best.items():
        system = name.replace("_", "-")
        runs = [{"concurrency": 1, "throughput": throughput / 4, "commits_per_saga": 5.0},
                {"concurrency": concurrency, "throughput": throughput,
                 "commits_per_saga": 0.1}]  # fmt: skip
        systems[system] = {"runs": runs, "crash": {"passed": True}}
    return {"systems": systems}


def test_only_ratios_near_their_target_and_free_of_services_are_played_again() -> None:
    results = _sweep(
        sagakit_fastpath=(1000.0, 256),
        sagaz=(600.0, 16),  # 1.67x against 2x: close
        dbos=(18.0, 64),  # 55x against 25x: more than twice the target, settled
        temporal=(12.0, 64),  # 83x against 50x: close, but Temporal runs a server
        sagakit_distributed=(300.0, 256),
    )
    assert close_calls(results) == [
        ("sagakit-fastpath", "sagaz", {"sagakit-fastpath": 256, "sagaz": 16})
    ]


def test_a_settled_close_call_is_read_from_its_rounds_not_from_the_sweep() -> None:
    results = _sweep(sagakit_fastpath=(1000.0, 256), sagaz=(600.0, 16))
    rounds = [{"order": ["sagakit-fastpath", "sagaz"], "ratio": 2.2},
              {"order": ["sagaz", "sagakit-fastpath"], "ratio": 1.9},
              {"order": ["sagakit-fastpath", "sagaz"], "ratio": 2.1}]  # fmt: skip
    settled = {"pair": ["sagakit-fastpath", "sagaz"], "rounds": rounds, "ratio": 2.1}
    results["head_to_head"] = {"sagakit-fastpath vs sagaz": settled}
    found = {t["target"]: t for t in targets(results)}
    target = found["sagakit-fastpath >= 2x sagaz"]
    assert target["measured"] == 2.1
    assert target["holds"] is True
    assert "head to head" in target["note"]
    assert "sweep: 1.67" in target["note"]


def test_without_a_head_to_head_the_sweep_decides() -> None:
    found = {t["target"]: t for t in targets(_sweep(sagakit_fastpath=(1000.0, 256),
                                                    sagaz=(600.0, 16)))}  # fmt: skip
    assert found["sagakit-fastpath >= 2x sagaz"]["measured"] == 1.667
    assert found["sagakit-fastpath >= 2x sagaz"]["holds"] is False
