// Stand-ins for the admin API in tests: answers shaped like docs/api.md, a fetch that
// records what the dashboard asked, and an EventSource the test drives.
import { vi } from "vitest";
import type { Backlog, DeadLetter, Failures, Latency, Me, Outcomes, SagaEvent, SagaRow, SagaTimeline, Stats } from "../src/api";

export const NOW_S = Date.now() / 1000;

export function sagaRow(overrides: Partial<SagaRow> & { saga_id: string }): SagaRow {
  return {
    definition: "order",
    definition_version: 1,
    key: overrides.saga_id,
    status: "running",
    current_step: null,
    deadline: null,
    version: 1,
    created_at: NOW_S - 60,
    updated_at: NOW_S - 30,
    reason: null,
    ...overrides,
  };
}

let seq = 0;
export function event(
  type: string,
  elapsedMs: number,
  outcome: SagaEvent["outcome"],
  step: string | null = null,
  participant: string | null = null,
  text = `${step ?? "saga"}: ${type}`,
): SagaEvent {
  seq += 1;
  return { seq, type, at: NOW_S + elapsedMs / 1000, elapsed_ms: elapsedMs, step, participant, outcome, text };
}

export const OPERATOR: Me = { name: "alice", role: "operator" };
export const VIEWER: Me = { name: "bob", role: "viewer" };

export const STATS: Stats = {
  sagas: { completed: 12, compensated: 3, needs_attention: 1 },
  in_flight: 2,
  needs_attention: 1,
  waiting_approval: 1,
  dead_letters: 1,
  outbox_lag_s: { saga: 0.2, payment: 0.0 },
};

export const DEAD_LETTER: DeadLetter = {
  id: "dl-0001",
  queue: "payment",
  reason: "malformed",
  detail: "not JSON",
  attempts: 1,
  dead_at: NOW_S - 5,
  message_id: "m-1",
  type: null,
  saga_id: null,
  body: "{oops",
};

const SPAN = { window: "15m" as const, since: 1_700_000_000, until: 1_700_000_090, every_s: 30 };

export const OUTCOMES: Outcomes = {
  ...SPAN,
  at: [1_700_000_000, 1_700_000_030, 1_700_000_060],
  series: { started: [2, 3, 0], completed: [1, 2, 1], compensated: [1, 0, 0], needs_attention: [0, 0, 1] },
};

export const LATENCY: Latency = {
  ...SPAN,
  events_read: 40,
  all_read: true,
  saga: { count: 5, p50: 1.2, p95: 2.1, p99: 2.2 },
  steps: [
    { step: "charge_payment", op: "action", participant: "payment", count: 5, p50: 0.2, p95: 0.4, p99: 0.45 },
    { step: "charge_payment", op: "compensation", participant: "payment", count: 1, p50: 0.1, p95: 0.1, p99: 0.1 },
  ],
};

export const FAILURES: Failures = {
  ...SPAN,
  events_read: 3,
  all_read: true,
  items: [
    {
      step: "charge_payment",
      pattern: "charge_payment failed: card declined for $*",
      example: "charge_payment failed: card declined for $8.50",
      count: 2,
      last_at: 1_700_000_050,
      search: { step: "charge_payment", reason: "charge_payment failed: card declined for $*", since: 1_700_000_000 },
    },
  ],
};

export const BACKLOG: Backlog = {
  ...SPAN,
  sampling_since: 1_700_000_000,
  sample_every_s: 5,
  at: [1_700_000_000, 1_700_000_005],
  dead_letters: [0, 1],
  stores: [{ store: "sqlite:////tmp/shop/payment.db", lag_s: [0, 0.5], unsent: [0, 2] }],
};

export interface Call {
  method: string;
  url: string;
  auth: string | null;
  body: unknown;
}

type Answer = { status?: number; body: unknown } | unknown;
type Route = [method: string, path: RegExp, answer: (call: Call) => Answer];

/** Replace fetch: each call goes to the first route whose method and path match (the
 * path without the query string); an answer without `status` is a 200 with that body. */
export function fakeApi(routes: Route[]): Call[] {
  const calls: Call[] = [];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (input: string, init: RequestInit = {}) => {
      const headers = (init.headers ?? {}) as Record<string, string>;
      const call: Call = {
        method: init.method ?? "GET",
        url: input,
        auth: headers.Authorization ?? null,
        body: typeof init.body === "string" ? JSON.parse(init.body) : undefined,
      };
      calls.push(call);
      const path = input.split("?")[0] ?? input;
      const route = routes.find(([method, pattern]) => method === call.method && pattern.test(path));
      if (!route) return json(404, { detail: `no route for ${call.method} ${input}` });
      const answer = route[2](call);
      if (answer && typeof answer === "object" && "body" in answer) {
        const { status = 200, body } = answer as { status?: number; body: unknown };
        return json(status, body);
      }
      return json(200, answer);
    }),
  );
  return calls;
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json" },
  });
}

/** Everything an overview needs, for a viewer or an operator; `extra` routes go first. */
export function overviewRoutes(me: Me, sagas: SagaRow[], extra: Route[] = []): Route[] {
  return [
    ...extra,
    ["GET", /^\/api\/me$/, () => me],
    ["GET", /^\/api\/stats$/, () => STATS],
    [
      "GET",
      /^\/api\/(sagas|search)$/,
      (call) => {
        const status = new URL(call.url, "http://x").searchParams.get("status");
        const items = status ? sagas.filter((row) => row.status === status) : sagas;
        return { items, total: items.length };
      },
    ],
    ["GET", /^\/api\/insights\/outcomes$/, () => OUTCOMES],
    ["GET", /^\/api\/insights\/latency$/, () => LATENCY],
    ["GET", /^\/api\/insights\/failures$/, () => FAILURES],
    ["GET", /^\/api\/insights\/backlog$/, () => BACKLOG],
    ["GET", /^\/api\/approvals$/, () => ({ items: [] })],
    ["GET", /^\/api\/dead-letters$/, () => ({ items: [DEAD_LETTER], depth: 1 })],
    ["GET", /^\/api\/breakers$/, () => ({ items: [] })],
    ["GET", /^\/api\/outbox$/, () => ({ items: [{ store: "saga", lag_s: 0.2, unsent: 0 }] })],
  ];
}

/** An EventSource whose life the test decides: open it, send changes, drop it. */
export class FakeEventSource {
  static instances: FakeEventSource[] = [];
  static last(): FakeEventSource {
    const last = FakeEventSource.instances[FakeEventSource.instances.length - 1];
    if (!last) throw new Error("no EventSource was opened");
    return last;
  }

  closed = false;
  private readonly listeners = new Map<string, Array<(event: Event) => void>>();

  constructor(readonly url: string) {
    FakeEventSource.instances.push(this);
  }

  addEventListener(type: string, listener: (event: Event) => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }

  close(): void {
    this.closed = true;
  }

  open(): void {
    this.dispatch("open", new Event("open"));
  }

  saga(row: SagaRow): void {
    this.dispatch("saga", new MessageEvent("saga", { data: JSON.stringify(row) }));
  }

  fail(): void {
    this.dispatch("error", new Event("error"));
  }

  private dispatch(type: string, event: Event): void {
    if (this.closed) return;
    for (const listener of this.listeners.get(type) ?? []) listener(event);
  }
}

export function installEventSource(): void {
  FakeEventSource.instances = [];
  vi.stubGlobal("EventSource", FakeEventSource);
}

/** A timeline with no tries yet, for a saga's page that is about something else. */
export function timelineOf(saga: SagaRow | undefined, overrides: Partial<SagaTimeline> = {}): SagaTimeline {
  return {
    saga: saga ?? null,
    trace_id: null,
    trace_url: null,
    started_at: saga?.created_at ?? null,
    ended_at: null,
    status: saga?.status ?? null,
    rules_version: null,
    pivot: null,
    unreadable: null,
    bars: [],
    waits: [],
    marks: [],
    data: { initial: {}, final: {} },
    ...overrides,
  };
}
