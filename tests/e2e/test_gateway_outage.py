"""`sagakit demo --gateway-outage`: what a user sees when the payment gateway is down."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.helpers import no_traceback, sagakit


def test_a_gateway_outage_in_the_demo_defers_charges_and_changes_no_outcome(
    tmp_path: Path,
) -> None:
    args = ("demo", "--orders", "16", "--seed", "5", "--json", "--dir")
    healthy = sagakit(*args, "calm", cwd=tmp_path)
    outage = sagakit(*args, "outage", "--gateway-outage", "1.5", cwd=tmp_path)
    for done in (healthy, outage):
        assert done.code == 0, str(done)
        no_traceback(done)
    calm, rough = json.loads(healthy.out), json.loads(outage.out)
    # the same orders end the same way: an outage compensates nobody
    for key in ("completed", "compensated", "needs_attention", "in_flight", "invariants"):
        assert rough[key] == calm[key], key
    assert all(rough["invariants"].values())
    gateway = rough["breakers"]["payment-gateway"]
    assert gateway["state"] == "closed"
    assert gateway["transitions"] >= 3  # opened, let a trial through, closed
    assert gateway["deferred"] > 0
    assert rough["elapsed_s"] > 1.0  # the charges waited for the gateway to come back

    shown = sagakit("breakers", "--db", "sqlite:///outage/payment.db", cwd=tmp_path)
    assert shown.code == 0, str(shown)
    assert "payment-gateway" in shown.out and "closed" in shown.out
