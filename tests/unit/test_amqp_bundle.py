"""The bundle wire format: messages in, the same messages out, and nothing else read as one."""

from __future__ import annotations

import json

import pytest

from sagakit.model.messages import TransportMessage
from sagakit.transports._amqp import BUNDLE, BUNDLE_TYPE, bundled, unbundled


def test_a_bundle_gives_back_every_message_whole_and_in_order() -> None:
    sent = [
        TransportMessage("payments", "m-1", b'{"a":1}', {"type": "charge", "saga_id": "s1"}),
        TransportMessage("payments", "m-2", b"", {"type": "refund"}),
        TransportMessage("payments", "m-3", "é\x00".encode(), {}),  # any bytes at all
    ]

    amqp = bundled(sent)

    assert (amqp.content_type, amqp.headers[BUNDLE], amqp.message_id) == (BUNDLE_TYPE, 3, "m-1")
    assert unbundled(amqp.body, "payments") == sent


def framed(index: str, bodies: bytes) -> bytes:
    return len(index).to_bytes(4, "big") + index.encode() + bodies


@pytest.mark.parametrize(
    "body",
    [
        b"",
        framed("[]", b""),  # no messages
        framed("[[1]]", b""),  # an entry without headers and length
        framed('[["a",{},3]]', b"xy"),  # a body shorter than it says
        framed('[["a",{},1]]', b"xyz"),  # bytes left over
        framed('[["a",{},-1],["b",{},4]]', b"xyz"),  # a negative length
        framed('[["a",1,1]]', b"x"),  # headers that are not an object
        framed('{"a":1}', b""),  # not a list
        b"\x00\x00\x00\xffnot json at all",
    ],
)
def test_anything_else_is_not_a_bundle(body: bytes) -> None:
    with pytest.raises(ValueError, match="not a message bundle"):
        unbundled(body, "payments")


def test_the_index_is_plain_json_a_person_can_read() -> None:
    amqp = bundled([TransportMessage("q", "m-1", b"{}", {"type": "t"})])
    size = int.from_bytes(amqp.body[:4], "big")
    assert json.loads(amqp.body[4 : 4 + size]) == [["m-1", {"type": "t"}, 2]]
