"""The chaos run with replicas: every kind of process twice, and the nemesis striking any."""

from __future__ import annotations

import httpx

from sagakit_shop.chaos.cli import _command
from sagakit_shop.chaos.config import ChaosConfig
from sagakit_shop.chaos.harness import schedule_for
from sagakit_shop.chaos.load import LoadStats, _place
from sagakit_shop.chaos.processes import ShopProcesses
from sagakit_shop.chaos.schedule import Cadence
from sagakit_shop.distributed import PROCESSES
from sagakit_shop.world import OrderRequest

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
    processes = ShopProcesses.for_run(
        config, gateway_books=config.directory / "gateway.db", output=None
    )
    children = processes.children
    by_name = {child.name: child.argv for child in children}
    assert set(by_name) == {"gateway", *config.processes}
    for name in PROCESSES:  # a replica runs the same service as the first of its kind
        first, second = by_name[name], by_name[f"{name}-2"]
        assert second[second.index("service") + 1] == name == first[first.index("service") + 1]
    order, replica = by_name["order"], by_name["order-2"]
    ports = [int(order[order.index("--port") + 1]), int(replica[replica.index("--port") + 1])]
    assert processes.order_ports == ports  # the load takes both APIs in turn
    assert ports[0] != ports[1]
    assert "--replicas 2" in _command(config, quick=False)


def test_one_replica_is_the_run_it_always_was() -> None:
    config = ChaosConfig(seed=11, seconds=120, cadence=KILLS_ONLY)
    assert config.processes == list(PROCESSES)
    assert {f.target for f in schedule_for(config)} <= set(PROCESSES)


async def test_an_order_refused_by_a_killed_replica_goes_to_the_next() -> None:
    reached: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.port == 1:  # the killed replica: nobody listens
            raise httpx.ConnectError("connection refused", request=request)
        reached.append(str(request.url))
        return httpx.Response(201, json={"order_id": f"order-{len(reached)}"})

    stats = LoadStats()
    stream = iter([OrderRequest("c-ada", "lamp", 1)] * 4)
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        for _ in range(4):
            await _place(client, ["http://127.0.0.1:1", "http://127.0.0.1:2"], next(stream), stats)
        await _place(client, ["http://127.0.0.1:1"], OrderRequest("c-bob", "lamp", 1), stats)
    assert stats.placed == 4
    assert reached == ["http://127.0.0.1:2/orders"] * 4
    assert stats.failed == {"refused": 1}  # only when every replica refuses
