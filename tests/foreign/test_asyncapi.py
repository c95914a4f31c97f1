"""`sagakit asyncapi` writes an AsyncAPI 3 document that the AsyncAPI parser accepts,
with the typed steps' models as message schemas, and that catches a message that
breaks them. (Messages captured from a real run are checked in test_node_shop.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sagakit.model.messages import Envelope, MessageKind, new_id
from tests.foreign.conftest import run_node

SAGAKIT = Path(sys.executable).parent / "sagakit"
#: `tests.sagas` is found from the repository's root, as a user's own module is from theirs.
ROOT = Path(__file__).resolve().parents[2]


def write_document(out: Path, *specs: str) -> dict[str, Any]:
    args = [arg for spec in specs for arg in ("--definitions", spec)]
    done = subprocess.run(
        [str(SAGAKIT), "asyncapi", *args, "--out", str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(out.read_text())
    return document


@pytest.mark.parametrize(
    "specs",
    [("sagakit_shop.saga:ORDER_SAGA",), ("tests.sagas:ORDER", "tests.sagas:TRIP")],
    ids=["the shop, typed", "untyped sagas"],
)
def test_the_document_is_valid_asyncapi_3(
    specs: tuple[str, ...], tmp_path: Path, node_packages: Path
) -> None:
    document = write_document(tmp_path / "asyncapi.json", *specs)
    code, report = run_node("check-asyncapi.mjs", str(tmp_path / "asyncapi.json"))
    assert (code, report) == (0, {"errors": [], "warnings": 0})
    assert document["asyncapi"] == "3.0.0"


def test_typed_steps_give_their_messages_their_models(tmp_path: Path) -> None:
    document = write_document(tmp_path / "asyncapi.json", "sagakit_shop.saga:ORDER_SAGA")
    schemas, messages = document["components"]["schemas"], document["components"]["messages"]
    assert document["channels"]["commands.inventory"]["address"] == "sagakit.commands.inventory"
    assert set(document["channels"]["commands.inventory"]["messages"]) == {
        "inventory.reserve",
        "inventory.release",
        "inventory.sagakit.release_locks",
        "sagakit.bundle",
    }
    command = messages["inventory.reserve"]["payload"]["allOf"][1]["properties"]
    assert command["payload"] == {"$ref": "#/components/schemas/ReserveStock"}
    assert command["step"] == {"enum": ["reserve_stock"]}
    assert set(schemas["ReserveStock"]["required"]) == {
        "order_id",
        "number",
        "item",
        "quantity",
        "sku",
    }
    reply = messages["inventory.reserve.reply"]["payload"]["allOf"][1]["properties"]["payload"]
    assert reply["allOf"][1]["then"]["properties"]["data"] == {
        "$ref": "#/components/schemas/StockReserved"
    }
    assert "inventory.reserve.reply" in document["channels"]["replies"]["messages"]


def envelope(kind: MessageKind, type_: str, payload: dict[str, Any], **fields: Any) -> Any:
    made = Envelope(
        message_id=new_id(),
        type=type_,
        kind=kind,
        saga_id="order-101",
        created_at=time.time(),
        payload=payload,
        **fields,
    )
    headers = {"message_id": made.message_id, "type": made.type, "saga_id": made.saga_id}
    return {"type": type_, "headers": headers, "body": made.model_dump(mode="json")}


def test_a_message_that_breaks_its_schema_is_caught(tmp_path: Path, node_packages: Path) -> None:
    write_document(tmp_path / "asyncapi.json", "sagakit_shop.saga:ORDER_SAGA")
    order = {"order_id": "order-101", "number": 101, "sku": "lamp", "item": "desk lamp"}
    step = {"step": "reserve_stock", "op": "action", "attempt": 1}
    step_of = {**step, "reply_to": "sagakit.replies.orchestrator"}
    good = envelope(MessageKind.COMMAND, "inventory.reserve", {**order, "quantity": 1}, **step_of)
    bad = envelope(
        MessageKind.COMMAND, "inventory.reserve", {**order, "quantity": "two"}, **step_of
    )
    odd = envelope(MessageKind.COMMAND, "inventory.teleport", order, **step_of)
    reply = {"ok": True, "data": {"reserved": "all of them"}}
    broken = envelope(
        MessageKind.REPLY, "inventory.reserve.reply", reply, causation_id=new_id(), **step
    )
    captured = tmp_path / "captured.json"
    captured.write_text(json.dumps([good, bad, odd, broken]))

    code, report = run_node("check-asyncapi.mjs", str(tmp_path / "asyncapi.json"), str(captured))

    assert code == 1
    assert report["checked"] == 3
    assert report["unknown"] == ["inventory.teleport"]
    assert [(i["type"], i["part"]) for i in report["invalid"]] == [
        ("inventory.reserve", "payload"),
        ("inventory.reserve.reply", "payload"),
    ]
    assert "quantity" in report["invalid"][0]["errors"]
    assert "reserved" in report["invalid"][1]["errors"]
