"""The SQL the PostgreSQL store says to asyncpg itself, bypassing SQLAlchemy on its hot
paths: each statement is the same text whatever the number of rows (arrays and
``unnest`` instead of a VALUES list per row), so it is prepared once per connection."""

from __future__ import annotations

import functools
from typing import Any

from sagakit.stores.ends import ENDED_CHANNEL
from sagakit.stores.postgres_wakeups import OUTBOX_CHANNEL

# The relay's statements: the same text whatever the number of rows.
CLAIM_OUTBOX = (
    "WITH c AS (SELECT id, message_id, destination, saga_id, headers, body, created_at "
    "FROM saga_outbox WHERE sent_at IS NULL AND id <> ALL($1::bigint[]) "
    "AND (relay_after IS NULL OR relay_after <= $3) "
    "ORDER BY id LIMIT $2 "
    "FOR UPDATE SKIP LOCKED), "
    "f AS (SELECT saga_id, destination, min(id) AS first FROM saga_outbox "
    "WHERE sent_at IS NULL AND saga_id IN (SELECT saga_id FROM c) "
    "GROUP BY saga_id, destination) "
    "SELECT c.*, f.first FROM c JOIN f USING (saga_id, destination) ORDER BY c.id"
)
MARK_SENT = "UPDATE saga_outbox SET sent_at = $2 WHERE id = ANY($1::bigint[])"
# A publisher's mark-sent: one statement in a transaction of its own (no BEGIN and
# COMMIT round trips), whose commit does not wait for the WAL to reach the disk. That is
# safe for this update alone: a mark-sent lost in a crash leaves the row unsent, the
# relay publishes it again and the consumer's inbox drops the copy. Every other commit
# of the store keeps the server's synchronous_commit.
MARK_SENT_MESSAGES = (
    "UPDATE saga_outbox SET sent_at = $2 "
    "FROM (SELECT set_config('synchronous_commit', 'off', true)) AS quick "
    "WHERE message_id = ANY($1::varchar[]) AND sent_at IS NULL"
)
# Outbox rows a fused runtime ran itself, marked sent by message id (a CTE of an append).
MARK_SENT_BY_ID = (
    "UPDATE saga_outbox SET sent_at = ${at}::float8 WHERE message_id = ANY(${ids}::varchar[])"
)

# Sagas whose retry or deadline is due, claimed as SqlUnit.due claims them.
DUE = (
    "SELECT saga_id FROM sagas WHERE wake_at <= $1 ORDER BY wake_at LIMIT $2 FOR UPDATE SKIP LOCKED"
)

# The inbox statements of PostgresUnit: every key of one consumer in one statement.
CLAIM = (
    "INSERT INTO saga_inbox (consumer, key, reply, received_at) "
    "SELECT $1, k, NULL, $3 FROM unnest($2::varchar[]) AS k "
    "ON CONFLICT (consumer, key) DO NOTHING RETURNING key"
)
# claim_commands: the commands' keys; then the action keys of the compensations whose
# own key was new; then the replies of those action keys that were there already. The
# final SELECT reads the rows as they were when the statement began: the ones it
# inserted are not among them, and neither is a row another transaction committed while
# an insert here waited for it (the caller reads that one's reply afterwards).
CLAIM_COMMANDS = (
    "WITH v AS (SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], "
    "$4::varchar[]) AS v (c, k, ac, ak)), "
    "own AS (INSERT INTO saga_inbox (consumer, key, reply, received_at) "
    "SELECT c, k, NULL, $5 FROM v ON CONFLICT (consumer, key) DO NOTHING "
    "RETURNING consumer, key), "
    "undo AS (SELECT v.ac, v.ak FROM v JOIN own ON own.consumer = v.c AND own.key = v.k "
    "WHERE v.ak IS NOT NULL), "
    "act AS (INSERT INTO saga_inbox (consumer, key, reply, received_at) "
    "SELECT ac, ak, NULL, $5 FROM undo ON CONFLICT (consumer, key) DO NOTHING "
    "RETURNING consumer, key) "
    "SELECT 'own', consumer, key, NULL FROM own "
    "UNION ALL SELECT 'action', consumer, key, NULL FROM act "
    "UNION ALL SELECT 'ran', i.consumer, i.key, i.reply FROM undo "
    "JOIN saga_inbox i ON i.consumer = undo.ac AND i.key = undo.ak"
)
REPLIES = "SELECT key, reply FROM saga_inbox WHERE consumer = $1 AND key = ANY($2::varchar[])"
SET_REPLIES_FROM = (
    "UPDATE saga_inbox AS i SET reply = v.reply "
    "FROM unnest(${0}::varchar[], ${1}::varchar[], ${2}::text[]) AS v (consumer, key, reply) "
    "WHERE i.consumer = v.consumer AND i.key = v.key"
)
SET_REPLIES = SET_REPLIES_FROM.format(1, 2, 3)


@functools.cache
def bulk_insert(
    table: Any,
    columns: tuple[str, ...],
    *,
    keys: tuple[str, ...] = (),
    keep: tuple[str, ...] = (),
    start: int = 1,
) -> str:
    """``INSERT ... SELECT`` of ``columns`` from one parameter, numbered ``start``: the
    rows (mappings) as an array of the table's own row type; an upsert with ``keys``.

    asyncpg encodes a mapping as a row of that type by column name, a column it lacks as
    NULL (and those are not inserted). That costs about a third less to encode than one
    array per column did, and less to unpack in the database: a fused batch's events
    and projection took 1.0-1.1 against 1.4-1.8 ms of this process's time, and
    3.0-3.5 against 4.3-4.5 ms until the database answered."""
    names = ", ".join(columns)
    sql = f"INSERT INTO {table.name} ({names}) SELECT {names} FROM unnest(${start}::{table.name}[])"
    if keys:
        changed = [c for c in columns if c not in keys and c not in keep]
        assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in changed)
        sql += f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {assignments}"
    return sql


@functools.cache
def together(inserts: tuple[str, ...], *, notify: bool, payloads: int | None) -> str:
    """One statement running every one of ``inserts`` (data-modifying CTEs always run to
    completion, read or not), then the outbox NOTIFY and the end announcements."""
    written = ", ".join(f"w{n} AS ({sql} RETURNING 1)" for n, sql in enumerate(inserts))
    tails = []
    if notify:
        tails.append(f"SELECT pg_notify('{OUTBOX_CHANNEL}', '')")
    if payloads is not None:
        tails.append(
            f"SELECT pg_notify('{ENDED_CHANNEL}', p) FROM unnest(${payloads}::text[]) AS p"
        )
    return f"WITH {written} {' UNION ALL '.join(tails) or 'SELECT 1'}"


# A unit's load for the common case, one statement: each saga's head (row-locked, in id
# order) and the events after its snapshot. Sagas with a snapshot take the general path.
_LOAD_HEADS = (
    "SELECT saga_id, version, snapshot_version FROM sagas "
    "WHERE saga_id = ANY($1::varchar[]) ORDER BY saga_id"
)
_LOAD = (
    "WITH h AS ({heads}) "
    "SELECT h.saga_id, h.version, h.snapshot_version, e.seq, e.type, e.schema_version, e.data, "
    "e.recorded_at FROM h LEFT JOIN saga_events e "
    "ON e.saga_id = h.saga_id AND e.seq > h.snapshot_version ORDER BY h.saga_id, e.seq"
)
LOAD_LOCKED = _LOAD.format(heads=_LOAD_HEADS + " FOR UPDATE")
LOAD_UNLOCKED = _LOAD.format(heads=_LOAD_HEADS)
# An orchestrator's batch of replies: the inbox claim ($1 consumer, $2 keys, $3 time)
# and the locked load of the sagas ($4), the claimed keys last in each row's ninth column.
CLAIM_AND_LOAD = (
    "WITH c AS (INSERT INTO saga_inbox (consumer, key, reply, received_at) "
    "SELECT $1, k, NULL, $3 FROM unnest($2::varchar[]) AS k "
    "ON CONFLICT (consumer, key) DO NOTHING RETURNING key), "
    "h AS (" + _LOAD_HEADS.replace("$1", "$4") + " FOR UPDATE) "
    "SELECT h.saga_id, h.version, h.snapshot_version, e.seq, e.type, e.schema_version, e.data, "
    "e.recorded_at, NULL::varchar AS claimed FROM h LEFT JOIN saga_events e "
    "ON e.saga_id = h.saga_id AND e.seq > h.snapshot_version "
    "UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, key FROM c "
    "ORDER BY 1, 4"
)
