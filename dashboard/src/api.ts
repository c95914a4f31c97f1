// The one door to the admin API (docs/api.md): its shapes, requests, and the
// live feed of saga changes. Nothing else in the dashboard calls fetch or EventSource.

export const STATUSES = [
  "running",
  "compensating",
  "completed",
  "compensated",
  "needs_attention",
  "resolved",
] as const;
export type SagaStatus = (typeof STATUSES)[number];

export interface SagaRow {
  saga_id: string;
  definition: string;
  definition_version: number;
  key: string | null;
  status: SagaStatus;
  current_step: string | null;
  deadline: number | null;
  version: number;
  created_at: number;
  updated_at: number;
  reason: string | null;
}

/** ok is green, failed red, undo a compensation (drawn going back), info grey. */
export type Outcome = "ok" | "failed" | "undo" | "info";

export interface SagaEvent {
  seq: number;
  type: string;
  at: number;
  elapsed_ms: number;
  step: string | null;
  participant: string | null;
  outcome: Outcome;
  text: string;
}

export interface SagaDetail {
  saga: SagaRow;
  trace_id: string | null;
  events: SagaEvent[];
}

export interface Page<T> {
  items: T[];
  total: number;
}

export type Role = "viewer" | "operator";

export interface Me {
  name: string;
  role: Role;
}

export interface Stats {
  sagas: Partial<Record<SagaStatus, number>>;
  in_flight: number;
  needs_attention: number;
  waiting_approval: number;
  dead_letters: number;
  outbox_lag_s: Record<string, number>;
}

export interface DeadLetter {
  id: string;
  queue: string;
  reason: string;
  detail: string;
  attempts: number;
  dead_at: number;
  message_id: string;
  type: string | null;
  saga_id: string | null;
  body: string;
}

export interface Breaker {
  store: string;
  name: string;
  state: string;
  failures: number;
  opened_at: number | null;
  updated_at: number | null;
}

export interface OutboxLag {
  store: string;
  lag_s: number;
  unsent: number;
}

export interface SagaQuery {
  status?: SagaStatus | undefined;
  definition?: string | undefined;
  key?: string | undefined;
  since?: number | undefined;
  limit: number;
  offset: number;
}

export type Window = "15m" | "1h" | "24h";
export const WINDOWS: readonly Window[] = ["15m", "1h", "24h"];

interface Spanned {
  window: Window;
  since: number;
  until: number;
  every_s: number;
}

export interface Outcomes extends Spanned {
  at: number[];
  series: Record<"started" | "completed" | "compensated" | "needs_attention", number[]>;
}

export interface Percentiles {
  count: number;
  p50: number | null;
  p95: number | null;
  p99: number | null;
}

export interface StepLatency extends Percentiles {
  step: string;
  op: "action" | "compensation";
  participant: string | null;
}

export interface Latency extends Spanned {
  events_read: number;
  all_read: boolean;
  saga: Percentiles;
  steps: StepLatency[];
}

export interface SearchCriteria {
  status?: SagaStatus | undefined;
  definition?: string | undefined;
  version?: number | undefined;
  key?: string | undefined;
  reason?: string | undefined;
  step?: string | undefined;
  since?: number | undefined;
  until?: number | undefined;
  sort?: "changed" | "duration" | undefined;
}

export interface FailureGroup {
  step: string | null;
  pattern: string;
  example: string;
  count: number;
  last_at: number;
  search: { step: string | null; reason: string; since: number };
}

export interface Failures extends Spanned {
  events_read: number;
  all_read: boolean;
  items: FailureGroup[];
}

export interface Backlog extends Spanned {
  sampling_since: number | null;
  sample_every_s: number;
  at: number[];
  dead_letters: number[];
  stores: Array<{ store: string; lag_s: Array<number | null>; unsent: Array<number | null> }>;
}

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export interface Bar {
  step: string;
  op: "action" | "compensation" | "approval";
  attempt: number;
  participant: string | null;
  kind: string | null;
  start: number;
  end: number | null;
  start_seq: number;
  end_seq: number | null;
  outcome: "running" | "succeeded" | "failed" | "deferred" | "timed_out" | "compensated";
  reason: string | null;
  input: JsonObject | null;
  reply: JsonObject | null;
  data_after: JsonObject | null;
}

export interface Wait {
  step: string;
  op: "action" | "compensation";
  attempt: number;
  participant: string | null;
  start: number;
  due: number;
  end: number | null;
}

export interface Mark {
  seq: number;
  type: string;
  at: number;
  step: string | null;
  text: string;
}

export interface SagaTimeline {
  saga: SagaRow | null;
  trace_id: string | null;
  trace_url: string | null;
  started_at: number | null;
  ended_at: number | null;
  status: SagaStatus | null;
  rules_version: number | null;
  pivot: string | null;
  unreadable: string | null;
  bars: Bar[];
  waits: Wait[];
  marks: Mark[];
  data: { initial: JsonObject | null; final: JsonObject | null };
}

export interface DefinitionSummary {
  name: string;
  version: number;
  known: boolean;
  counts: Partial<Record<SagaStatus, number>>;
  total: number;
}

export interface DefinitionStep {
  name: string;
  participant: string;
  command: string;
  compensation: string | null;
  kind: "compensatable" | "pivot" | "retriable" | "approval";
  optional: boolean;
  timeout_s: number;
  attempts: number | null;
  on_timeout: string | null;
}

export interface Definition extends DefinitionSummary {
  stages?: DefinitionStep[][];
  mermaid?: string;
}

/** One operator action on the record (`GET /api/audit`): `target` is a saga id, or for
 * a dead letter's replay the dead letter's id ("all" when the CLI replayed every one). */
export interface AuditAction {
  id: number;
  at: number;
  who: string;
  action: string;
  target: string;
  note: string;
  via: "api" | "cli";
}

/** The actions whose target is a dead letter; every other one acts on a saga. */
export const DEAD_LETTER_ACTIONS: ReadonlySet<string> = new Set(["replay"]);

export type BulkAction = "retry" | "compensate" | "resolve";

export type SagaAction = "retry" | "compensate" | "resolve" | "approve" | "reject";

/** The actions whose note (the "why" written to the saga's log) the API requires. */
export const NOTE_REQUIRED: ReadonlySet<string> = new Set(["resolve", "reject"]);
export const NOTE_MAX = 2000;

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

// ------------------------------------------------------------------------------- who
// The dashboard is known to the API by its session cookie (session.ts signs in): no
// token is kept in the page, and requests carry none.

let unauthorized: () => void = () => {};

/** Who hears that the API answered 401 (the token is missing or wrong): the app. */
export function onUnauthorized(listener: () => void): void {
  unauthorized = listener;
}

// ---------------------------------------------------------------------------- requests

async function request<T>(method: "GET" | "POST", path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? null : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "the admin API cannot be reached");
  }
  if (!response.ok) {
    if (response.status === 401) unauthorized();
    throw new ApiError(response.status, await errorText(response));
  }
  return (await response.json()) as T;
}

interface Detail {
  loc?: unknown[];
  msg?: string;
}

/** FastAPI says why in `detail`: a sentence, or for a 422 a list of field errors. */
async function errorText(response: Response): Promise<string> {
  try {
    const { detail } = (await response.json()) as { detail?: string | Detail[] };
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail.map((d) => `${(d.loc ?? []).slice(1).join(".")}: ${d.msg ?? ""}`).join("; ");
    }
  } catch {
    // not JSON: fall through to the status line
  }
  return `${response.status} ${response.statusText}`.trim();
}

export function sagasPath(query: SagaQuery): string {
  const params = new URLSearchParams();
  if (query.status) params.set("status", query.status);
  if (query.definition) params.set("definition", query.definition);
  if (query.key) params.set("key", query.key);
  if (query.since !== undefined) params.set("since", String(query.since));
  params.set("limit", String(query.limit));
  params.set("offset", String(query.offset));
  return `/api/sagas?${params.toString()}`;
}

/** The query string of a search: only the criteria given. */
export function searchPath(criteria: SearchCriteria, limit: number, offset: number): string {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(criteria)) {
    if (value !== undefined && value !== "") params.set(name, String(value));
  }
  params.set("limit", String(limit));
  params.set("offset", String(offset));
  return `/api/search?${params.toString()}`;
}

/** The query string of a page of the record: the target only when one is given. */
export function auditPath(target: string, limit: number, offset: number): string {
  const params = new URLSearchParams();
  if (target) params.set("target", target);
  params.set("limit", String(limit));
  params.set("offset", String(offset));
  return `/api/audit?${params.toString()}`;
}

const id = encodeURIComponent;

/** The note travels only when given: an empty one would be recorded as a blank "why". */
const why = (note: string): { note?: string } => (note.trim() ? { note: note.trim() } : {});

export const api = {
  me: () => request<Me>("GET", "/api/me"),
  stats: () => request<Stats>("GET", "/api/stats"),
  sagas: (query: SagaQuery) => request<Page<SagaRow>>("GET", sagasPath(query)),
  saga: (sagaId: string) => request<SagaDetail>("GET", `/api/sagas/${id(sagaId)}`),
  deadLetters: () => request<{ items: DeadLetter[]; depth: number }>("GET", "/api/dead-letters"),
  approvals: () => request<{ items: SagaRow[] }>("GET", "/api/approvals"),
  breakers: () => request<{ items: Breaker[] }>("GET", "/api/breakers"),
  outbox: () => request<{ items: OutboxLag[] }>("GET", "/api/outbox"),
  act: (sagaId: string, action: SagaAction, note: string) =>
    request<{ accepted: boolean; saga_id: string }>(
      "POST",
      `/api/sagas/${id(sagaId)}/${action}`,
      why(note),
    ),
  outcomes: (window: Window) => request<Outcomes>("GET", `/api/insights/outcomes?window=${window}`),
  latency: (window: Window) => request<Latency>("GET", `/api/insights/latency?window=${window}`),
  failures: (window: Window) => request<Failures>("GET", `/api/insights/failures?window=${window}`),
  backlog: (window: Window) => request<Backlog>("GET", `/api/insights/backlog?window=${window}`),
  search: (criteria: SearchCriteria, limit: number, offset: number) =>
    request<Page<SagaRow>>("GET", searchPath(criteria, limit, offset)),
  timeline: (sagaId: string) => request<SagaTimeline>("GET", `/api/sagas/${id(sagaId)}/timeline`),
  definitions: () => request<{ items: DefinitionSummary[] }>("GET", "/api/definitions"),
  definition: (name: string, version: number) =>
    request<Definition>("GET", `/api/definitions/${id(name)}/${version}`),
  bulk: (action: BulkAction, sagaIds: string[], note: string) =>
    request<{ accepted: string[]; unknown: string[] }>("POST", `/api/bulk/${action}`, {
      saga_ids: sagaIds,
      ...why(note),
    }),
  audit: (target: string, limit: number, offset: number) =>
    request<{ items: AuditAction[] }>("GET", auditPath(target, limit, offset)),
  replay: (deadLetterId: string, note: string) =>
    request<{ replayed: number }>("POST", `/api/dead-letters/${id(deadLetterId)}/replay`, why(note)),
};

// ---------------------------------------------------------------------------- the feed

export type FeedMode = "connecting" | "live" | "polling";

/** Saga changes as they happen, from `/api/stream`. When the stream drops the feed says
 * "polling" (the views then poll the API themselves) and tries the stream again later. */
export class SagaFeed {
  mode: FeedMode = "connecting";
  private source: EventSource | null = null;
  private retry: ReturnType<typeof setTimeout> | undefined;
  private readonly rowListeners = new Set<(row: SagaRow) => void>();
  private readonly modeListeners = new Set<(mode: FeedMode) => void>();

  constructor(private readonly retryMs = 15_000) {}

  start(): void {
    this.close();
    if (typeof EventSource === "undefined") {
      this.setMode("polling");
      return;
    }
    const source = new EventSource("/api/stream"); // the session cookie goes with it
    this.source = source;
    source.addEventListener("open", () => this.setMode("live"));
    source.addEventListener("saga", (event) => {
      let row: SagaRow;
      try {
        row = JSON.parse((event as MessageEvent<string>).data) as SagaRow;
      } catch {
        return; // a garbled change is skipped; the next poll or change corrects the view
      }
      for (const listener of this.rowListeners) listener(row);
    });
    source.addEventListener("error", () => {
      this.close();
      this.setMode("polling");
      this.retry = setTimeout(() => this.start(), this.retryMs);
    });
  }

  stop(): void {
    this.close();
  }

  onRow(listener: (row: SagaRow) => void): () => void {
    this.rowListeners.add(listener);
    return () => {
      this.rowListeners.delete(listener);
    };
  }

  onMode(listener: (mode: FeedMode) => void): () => void {
    this.modeListeners.add(listener);
    return () => {
      this.modeListeners.delete(listener);
    };
  }

  private close(): void {
    clearTimeout(this.retry);
    this.source?.close();
    this.source = null;
  }

  private setMode(mode: FeedMode): void {
    if (mode === this.mode) return;
    this.mode = mode;
    for (const listener of this.modeListeners) listener(mode);
  }
}
