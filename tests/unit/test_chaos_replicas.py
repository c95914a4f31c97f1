"""The chaos run with replicas: every kind of process twice, and the nemesis striking any."""

from __future__ import annotations

from shop.chaos.cli import _command
from shop.chaos.config import ChaosConfig
from shop.chaos.harness import ChaosRun, schedule_for
from shop.chaos.schedule import Cadence
from shop.distributed import PROCESSES

KILLS_ONLY = Cadence(kill=2.0, pause=0.0, broker=0.0, postgres=0.0, isolate=0.0)


def test_two_replicas_run_every_process_twice_and_the_kills_reach_both() -> None:
    config = ChaosConfig(
        seed=11,
        replicas=2,
        seconds=120,
        cadence=KILLS_ONLY,
        db="postgresql://h/s",
        broker="amqp://h/",
    )
    assert config.processes == [*PROCESSES, *(f"{name}-2" for name in PROCESSES)]
    schedule = schedule_for(config)
    assert {fault.kind for fault in schedule} == {"kill"}  # no server is restarted
    targets = {fault.target for fault in schedule}
    assert any(t.endswith("-2") for t in targets)
    assert any(t in PROCESSES for t in targets)
    children = ChaosRun(config, None)._children()
    by_name = {child.name: child.argv for child in children}
    assert set(by_name) == {"gateway", *config.processes}
    for name in PROCESSES:  # a replica runs the same service as the first of its kind
        first, second = by_name[name], by_name[f"{name}-2"]
        assert second[second.index("service") + 1] == name == first[first.index("service") + 1]
    order, replica = by_name["order"], by_name["order-2"]
    assert order[order.index("--port") + 1] != replica[replica.index("--port") + 1]
    assert "--replicas 2" in _command(config, quick=False)


def test_one_replica_is_the_run_it_always_was() -> None:
    config = ChaosConfig(seed=11, seconds=120, cadence=KILLS_ONLY)
    assert config.processes == list(PROCESSES)
    assert {f.target for f in schedule_for(config)} <= set(PROCESSES)
