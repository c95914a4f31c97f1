"""The probes `sagakit run` serves, over a real store: what /readyz says, and why."""

from __future__ import annotations

import httpx

from sagakit import Orchestrator, Runtime, open_store
from sagakit.service import ServiceState, attach_metrics, health_app, readiness
from tests.sagas import ORDER


async def probe(state: ServiceState, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=health_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        return await client.get(path)


async def test_readyz_names_each_reason_and_turns_ready_once_the_runtime_runs(pg_url: str) -> None:
    store = open_store(pg_url)
    gone = open_store("postgresql://postgres@127.0.0.1:1/nowhere")
    runtime = Runtime().add(Orchestrator(store, [ORDER])).relay(gone)
    state = ServiceState(runtime, attach_metrics(runtime))
    try:
        answer = await probe(state, "/readyz")
        assert answer.status_code == 503
        reasons = answer.json()["reasons"]
        assert reasons[0] == "the runtime is not running yet"
        assert f"{pg_url} has no sagakit tables" in reasons[1]
        assert reasons[2].startswith("postgresql://postgres@127.0.0.1:1/nowhere is unreachable")
        assert len(reasons) == 3
        assert (await probe(state, "/healthz")).json() == {"status": "alive"}

        await store.migrate()
        ready = Runtime().add(Orchestrator(store, [ORDER]))
        async with ready:
            assert await readiness(ready) == []
            assert await readiness(ready, stopping=True) == ["the service is stopping"]
            live = ServiceState(ready, attach_metrics(ready))
            assert (await probe(live, "/readyz")).json() == {"status": "ready"}
            metrics = await probe(live, "/metrics")
            assert metrics.status_code == 200
            assert "sagakit_sagas_in_flight 0.0" in metrics.text
    finally:
        await store.close()
        await gone.close()
