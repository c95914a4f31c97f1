"""Message ids and envelopes as every adapter and store relies on them."""

from __future__ import annotations

import uuid

from sagakit.messages import Envelope, MessageKind, new_id


def test_ids_are_distinct_version_4_uuids_in_32_hex_characters() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for value in ids[:500]:
        parsed = uuid.UUID(hex=value)
        assert parsed.hex == value  # lower case, no dashes
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


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
