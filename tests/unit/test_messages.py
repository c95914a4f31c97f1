"""Message ids and envelopes as every adapter and store relies on them."""

from __future__ import annotations

import os
import uuid

from sagakit.model.messages import Envelope, MessageKind, new_id


def test_ids_are_distinct_version_4_uuids_in_32_hex_characters() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for value in ids:  # every id of many bulk reads, not only the first read's
        parsed = uuid.UUID(hex=value)
        assert parsed.hex == value  # lower case, no dashes
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_a_forked_child_never_hands_out_its_parents_ids() -> None:
    new_id()  # the parent now holds ids made but not yet handed out
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the ids it would hand out next
        os.write(write, "".join(new_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    text = os.read(read, 50 * 32 + 1).decode()
    os.close(read)
    child = {text[i : i + 32] for i in range(0, len(text), 32)}
    parent = {new_id() for _ in range(50)}
    assert len(child) == 50
    assert not child & parent


def test_an_envelope_survives_its_own_bytes() -> None:
    env = Envelope(
        message_id=new_id(),
        type="payment.charge",
        kind=MessageKind.COMMAND,
        saga_id=new_id(),
        created_at=1.5,
        step="charge",
        op="action",
        attempt=2,
        payload={"amount": 50, "nested": {"ok": True}},
    )
    assert Envelope.from_bytes(env.to_bytes()) == env
