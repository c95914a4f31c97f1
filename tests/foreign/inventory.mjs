// The shop's inventory service as a sagakit participant in Node.js, written from
// docs/protocol.md alone. It serves the order saga's reserve_stock step: `reserve`
// (refused when the stock is short) and its compensation `release`, against the
// inventory's PostgreSQL tables (items, reservations), with an inbox of its own.
//
//   AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ DATABASE_URL=postgresql://.../shop_inventory \
//   SAGAKIT_PREFIX= TRACE_FILE=spans.jsonl node inventory.mjs
import { randomBytes, randomUUID } from "node:crypto";
import { appendFileSync } from "node:fs";
import amqp from "amqplib";
import pg from "pg";

const PARTICIPANT = "inventory";
const PREFIX = process.env.SAGAKIT_PREFIX ?? ""; // before every queue name (section 1)
const QUEUE = `sagakit.commands.${PARTICIPANT}`;
const DEAD_LETTERS = "sagakit.dead-letters";
const QUORUM = { durable: true, arguments: { "x-queue-type": "quorum" } };
const MAX_BODY = 1024 * 1024;
const BUNDLE = "application/vnd.sagakit.bundle";

// --- the inbox: one row per (saga, step, op), holding the answer given (section 4)
const db = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
await db.query(
  "CREATE TABLE IF NOT EXISTS foreign_inbox (key TEXT PRIMARY KEY, answer TEXT)",
);
const PREVENTED = { ok: false, retryable: false, reason: "prevented: compensated before it ran" };
const NOTHING_TO_UNDO = { ok: true, data: { null_compensation: true } };

// --- the step's work: each runs inside the command's transaction
class Refused extends Error {}

const handlers = {
  async reserve(client, cmd) {
    const taken = await client.query(
      `UPDATE items SET on_hand = on_hand - $2, reserved = reserved + $2
       WHERE sku = $1 AND on_hand >= $2`,
      [cmd.sku, cmd.quantity],
    );
    if (taken.rowCount === 0) {
      throw new Refused(`not enough ${cmd.item} in stock for ${cmd.quantity}`);
    }
    await client.query(
      `INSERT INTO reservations (order_id, sku, quantity, status)
       VALUES ($1, $2, $3, 'reserved')`,
      [cmd.order_id, cmd.sku, cmd.quantity],
    );
    return { reserved: cmd.quantity };
  },
  async release(client, cmd) {
    const held = await client.query(
      `UPDATE reservations SET status = 'released'
       WHERE order_id = $1 AND status = 'reserved' RETURNING sku, quantity`,
      [cmd.order_id],
    );
    for (const { sku, quantity } of held.rows) {
      await client.query(
        `UPDATE items SET on_hand = on_hand + $2, reserved = reserved - $2 WHERE sku = $1`,
        [sku, quantity],
      );
    }
    return {};
  },
};

// The step's command model (what `sagakit asyncapi` publishes for reserve_stock): a
// command that does not fit is refused, naming the field (section 7).
function commandOf(data) {
  const wrong = (field, problem) => new Refused(`reserve_stock: command field '${field}': ${problem}`);
  for (const field of ["order_id", "sku", "item"]) {
    if (typeof data[field] !== "string" || !data[field]) throw wrong(field, "a non-empty string is required");
  }
  for (const field of ["number", "quantity"]) {
    if (!Number.isInteger(data[field]) || data[field] < 1) throw wrong(field, "a whole number >= 1 is required");
  }
  return data;
}

// --- one command: inbox, barrier and work in one transaction; returns the reply body
async function run(command) {
  const { saga_id: saga, step, op } = command;
  const work = handlers[command.type.slice(PARTICIPANT.length + 1)];
  const client = await db.connect();
  try {
    await client.query("BEGIN");
    if (command.timeout) {
      // The step's budget (section 2): past it the database cancels the statement, the
      // transaction rolls back, and the answer is a failure that may pass.
      await client.query(`SET LOCAL statement_timeout = ${Math.ceil(command.timeout * 1000)}`);
    }
    const claim = (key, answer = null) =>
      client.query(
        "INSERT INTO foreign_inbox (key, answer) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING key",
        [key, answer && JSON.stringify(answer)],
      );
    const stored = async (key) =>
      JSON.parse((await client.query("SELECT answer FROM foreign_inbox WHERE key = $1", [key])).rows[0].answer);
    const key = `${saga}/${step}/${op}`;
    if ((await claim(key)).rowCount === 0) {
      const answer = await stored(key); // a duplicate: the stored answer, again
      await client.query("COMMIT");
      return { ...answer, duplicate: true };
    }
    let answer;
    if (op === "compensation" && (await claim(`${saga}/${step}/action`, PREVENTED)).rowCount === 1) {
      answer = NOTHING_TO_UNDO; // the action never ran here; it never will
    } else if (op === "compensation" && !(await stored(`${saga}/${step}/action`)).ok) {
      answer = NOTHING_TO_UNDO; // the action was refused: nothing was done
    } else {
      await client.query("SAVEPOINT work");
      try {
        answer = { ok: true, data: await work(client, commandOf(command.payload)) };
      } catch (error) {
        if (!(error instanceof Refused) || op === "compensation") throw error;
        await client.query("ROLLBACK TO SAVEPOINT work");
        answer = { ok: false, retryable: false, reason: error.message };
      }
    }
    await client.query("UPDATE foreign_inbox SET answer = $2 WHERE key = $1", [key, JSON.stringify(answer)]);
    await client.query("COMMIT");
    return answer;
  } catch (error) {
    // Not kept: the work did not happen, and the saga's retry must run it afresh.
    await client.query("ROLLBACK").catch(() => {});
    return { ok: false, retryable: true, reason: `${error.name}: ${error.message}` };
  } finally {
    client.release();
  }
}

// --- the reply envelope (section 3) and the trace context (section 9)
function replyTo(command, answer, traceparent) {
  return {
    message_id: randomUUID().replaceAll("-", ""),
    type: `${command.type}.reply`,
    kind: "reply",
    saga_id: command.saga_id,
    causation_id: command.message_id,
    schema_version: 2,
    created_at: Date.now() / 1000,
    traceparent,
    reply_to: null,
    step: command.step,
    op: command.op,
    attempt: command.attempt,
    payload: {
      ok: answer.ok,
      data: answer.data ?? {},
      reason: answer.reason ?? null,
      retryable: answer.retryable ?? false,
      duplicate: answer.duplicate ?? false,
      locks: false,
      deferred: false,
      retry_after: null,
    },
  };
}

function childSpan(command) {
  const parent = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(command.traceparent ?? "");
  if (!parent) return { traceparent: command.traceparent ?? null, end() {} };
  const [, traceId, parentId, flags] = parent;
  const spanId = randomBytes(8).toString("hex");
  return {
    traceparent: `00-${traceId}-${spanId}-${flags}`,
    end(answer) {
      if (!process.env.TRACE_FILE) return;
      const span = { trace_id: traceId, span_id: spanId, parent_id: parentId, name: "saga.step",
        service: "inventory-node", attributes: { "saga.id": command.saga_id, "saga.step": command.step,
          "saga.op": command.op, "saga.ok": answer.ok } };
      appendFileSync(process.env.TRACE_FILE, JSON.stringify(span) + "\n");
    },
  };
}

// --- the broker: a confirm channel, our queue, manual acks (sections 1, 2 and 5)
const connection = await amqp.connect(process.env.AMQP_URL);
const channel = await connection.createConfirmChannel();
await channel.assertQueue(PREFIX + QUEUE, QUORUM);
await channel.assertQueue(PREFIX + DEAD_LETTERS, QUORUM);
await channel.prefetch(64);
const returned = new Set();
channel.on("return", (message) => returned.add(message.properties.messageId));

function publish(queue, body, messageId, headers, contentType = "application/json") {
  return new Promise((resolve, reject) => {
    const options = { messageId, headers, contentType, deliveryMode: 2, mandatory: true };
    channel.sendToQueue(PREFIX + queue, body, options, (error) => {
      if (error) reject(error);
      else if (returned.delete(messageId)) reject(new Error(`nothing is bound to ${queue}`));
      else resolve();
    });
  });
}

function deadLetter(part, reason, detail, attempt) {
  return publish(DEAD_LETTERS, part.body, part.messageId, {
    ...part.headers,
    "x-sagakit-reason": reason,
    "x-sagakit-detail": detail.slice(0, 4000),
    "x-sagakit-original-queue": QUEUE,
    "x-sagakit-attempts": attempt,
    "x-sagakit-dead-at": String(Date.now() / 1000),
    "x-sagakit-dead-letter-id": randomUUID().replaceAll("-", ""),
  });
}

// A bundle (section 6): n, n bytes of JSON [[id, headers, length], ...], then bodies.
function unbundle(body) {
  const size = body.readUInt32BE(0);
  const index = JSON.parse(body.subarray(4, 4 + size).toString("utf8"));
  let at = 4 + size;
  const parts = index.map(([messageId, headers, length]) => {
    if (!Number.isInteger(length) || length < 0) throw new Error(`a part of length ${length}`);
    const part = { messageId, headers, body: body.subarray(at, at + length) };
    at += length;
    return part;
  });
  if (!parts.length || at !== body.length) throw new Error(`${body.length} bytes do not add up`);
  return parts;
}

// The envelope's checks (sections 2 and 5): what fails them is never answered.
const ENVELOPE = ["message_id", "type", "kind", "saga_id", "causation_id", "schema_version",
  "created_at", "traceparent", "reply_to", "step", "op", "attempt", "timeout", "payload"];
function poison(part) {
  if (part.body.length > MAX_BODY) return ["oversize", `${part.body.length} bytes exceeds ${MAX_BODY}`];
  let command;
  try {
    command = JSON.parse(part.body.toString("utf8"));
  } catch {
    return ["malformed", "body is not valid JSON"];
  }
  const unknown = Object.keys(command ?? {}).filter((field) => !ENVELOPE.includes(field));
  if (typeof command !== "object" || !command || unknown.length) return ["schema", `not an envelope (${unknown})`];
  if (command.schema_version > 2) return ["schema", `envelope version ${command.schema_version} is newer than this reader`];
  if (command.type === `${PARTICIPANT}.sagakit.release_locks`) return [null, command];
  const served = Object.keys(handlers).map((name) => `${PARTICIPANT}.${name}`);
  if (command.kind !== "command" || !served.includes(command.type)) {
    return ["unknown_type", `${command.kind} ${JSON.stringify(command.type)} is not a command for ${PARTICIPANT}`];
  }
  if (!command.step || !command.op || !command.reply_to) return ["schema", "a saga command needs step, op and reply_to"];
  return [null, command];
}

async function handle(part, attempt) {
  const [reason, found] = poison(part);
  if (reason) return deadLetter(part, reason, found, attempt);
  const command = found;
  if (!command.step) return; // a lock release: we hold no semantic locks
  const span = childSpan(command);
  const answer = await run(command);
  const reply = replyTo(command, answer, span.traceparent);
  const headers = { message_id: reply.message_id, type: reply.type, saga_id: reply.saga_id };
  if (reply.traceparent) headers.traceparent = reply.traceparent;
  await publish(command.reply_to, Buffer.from(JSON.stringify(reply)), reply.message_id, headers);
  span.end(answer);
  console.log(`${command.step} ${command.op} ${command.saga_id}: ${answer.ok ? "ok" : answer.reason}` +
    (answer.duplicate ? " (duplicate)" : ""));
}

// One delivery at a time, in order; each is acked only once all it carries is dealt with.
let line = Promise.resolve();
const { consumerTag } = await channel.consume(PREFIX + QUEUE, (message) => {
  line = line.then(async () => {
    const headers = message.properties.headers ?? {};
    const attempt = (Number(headers["x-sagakit-attempt"]) || 1) + (Number(headers["x-delivery-count"]) || 0);
    const own = Object.fromEntries(Object.entries(headers).filter(([name]) => !name.startsWith("x-")));
    const whole = { messageId: message.properties.messageId, headers: own, body: message.content };
    let parts = [whole];
    if (message.properties.contentType === BUNDLE) {
      try {
        parts = unbundle(message.content);
      } catch (error) {
        await deadLetter(whole, "malformed", `not a message bundle: ${error.message}`, attempt);
        parts = [];
      }
    }
    for (const part of parts) await handle(part, attempt);
    channel.ack(message);
  }).catch((error) => {
    console.error(`cannot go on: ${error.stack}`); // unacked deliveries come back
    process.exit(1);
  });
}, { noAck: false });
console.log(`ready: ${PARTICIPANT} consumes ${PREFIX}${QUEUE}`);

process.on("SIGTERM", async () => {
  await channel.cancel(consumerTag);
  await line;
  await connection.close();
  await db.end();
  process.exit(0);
});
