// One saga: its facts, a timeline of its steps (forward left to right, compensations
// drawn going back underneath), and its full log with times relative to the start.
import { useContext } from "react";
import { api, type FeedMode, type SagaAction, type SagaEvent, type SagaFeed } from "./api";
import { type ActionSpec, Actions } from "./Actions";
import { clock, elapsed } from "./format";
import { useFeedTick, useResource } from "./hooks";
import { StatusBadge } from "./SagaList";
import { describeError, POLL_MS, SessionContext } from "./session";

type Tone = "ok" | "failed" | "undo" | "info";

export interface StepNode {
  step: string;
  participant: string | null;
  /** The step's latest forward event: what it is doing or how it ended. */
  forward: SagaEvent | undefined;
  /** Its latest compensation event, if it is being (or was) undone. */
  back: SagaEvent | undefined;
  attempts: number;
}

const COMPENSATION = new Set(["CompensationRequested", "StepCompensated", "CompensationFailed"]);
// Saga-level facts that happen to name a step: they are in the log, not on a step's node.
const NOT_ON_A_NODE = new Set([
  "CompensationStarted",
  "ReplyIgnored",
  "OperatorIntervened",
  "SagaNeedsAttention",
]);

/** The steps in the order they first ran, each with its forward and compensation ends. */
export function stepNodes(events: readonly SagaEvent[]): StepNode[] {
  const nodes = new Map<string, StepNode>();
  for (const event of events) {
    if (!event.step || NOT_ON_A_NODE.has(event.type)) continue;
    let node = nodes.get(event.step);
    if (!node) {
      node = { step: event.step, participant: null, forward: undefined, back: undefined, attempts: 0 };
      nodes.set(event.step, node);
    }
    node.participant ??= event.participant;
    if (COMPENSATION.has(event.type) || event.outcome === "undo") {
      node.back = event;
    } else {
      node.forward = event;
      if (event.type === "StepRequested") node.attempts += 1;
    }
  }
  return [...nodes.values()];
}

const FORWARD_LABEL: Record<string, string> = {
  StepRequested: "requested",
  StepSucceeded: "succeeded",
  StepFailed: "FAILED",
  StepTimedOut: "TIMED OUT",
  StepSkipped: "skipped",
  RetryScheduled: "retry scheduled",
  ApprovalRequested: "awaiting approval",
};

const BACK_LABEL: Record<string, string> = {
  CompensationRequested: "compensating",
  StepCompensated: "compensated",
  CompensationFailed: "COMPENSATION FAILED",
  RetryScheduled: "retry scheduled",
};

/** A node's word for its latest event; a failure that reads as "info" was a deferral
 * (its dependency was down), which is a wait, not a failure. */
function label(event: SagaEvent, labels: Record<string, string>): string {
  if (event.outcome === "info" && (event.type === "StepFailed" || event.type === "CompensationFailed")) {
    return "deferred";
  }
  return labels[event.type] ?? event.type;
}

function tone(event: SagaEvent, back: boolean): Tone {
  if (event.outcome === "failed") return "failed";
  if (back) return "undo";
  return event.outcome === "ok" ? "ok" : "info";
}

/** A short tag per participant, as in the sketch: [O]rder, [P]ayment, ... */
export function badges(events: readonly SagaEvent[]): Map<string, string> {
  const tags = new Map<string, string>();
  const taken = new Set<string>();
  for (const { participant } of events) {
    if (!participant || tags.has(participant)) continue;
    let size = 1;
    let tag = participant.slice(0, 1).toUpperCase();
    while (taken.has(tag) && size < participant.length) {
      size += 1;
      tag = participant.slice(0, 1).toUpperCase() + participant.slice(1, size);
    }
    tags.set(participant, tag);
    taken.add(tag);
  }
  return tags;
}

function Badge({ participant, tags }: { participant: string | null; tags: Map<string, string> }) {
  if (!participant) return null;
  return (
    <span className="badge" title={participant}>
      [{tags.get(participant) ?? "?"}]
    </span>
  );
}

export function Timeline({ events }: { events: readonly SagaEvent[] }) {
  const nodes = stepNodes(events);
  const tags = badges(events);
  const turn = events.find((event) => event.type === "CompensationStarted");
  if (nodes.length === 0) return <p className="empty">No steps yet.</p>;
  return (
    <ol className="timeline" aria-label="Steps">
      {nodes.map((node, index) => {
        const last = index === nodes.length - 1;
        return (
          <li key={node.step} className="lane">
            {node.forward ? (
              <div
                className={`node ${tone(node.forward, false)}`}
                data-outcome={tone(node.forward, false)}
              >
                <span className="head">
                  <Badge participant={node.participant} tags={tags} /> {node.step}
                </span>
                <span className="when">
                  {label(node.forward, FORWARD_LABEL)} (
                  {elapsed(node.forward.elapsed_ms)})
                  {node.attempts > 1 && `, ${node.attempts} attempts`}
                </span>
                {!last && (
                  <span className="arrow forward" aria-hidden="true">
                    →
                  </span>
                )}
              </div>
            ) : (
              <div className="node spacer" aria-hidden="true" />
            )}
            {node.back ? (
              <div
                className={`node back ${tone(node.back, true)}`}
                data-outcome={tone(node.back, true)}
              >
                <span className="head">
                  <span aria-label="undo">↩</span>{" "}
                  <Badge participant={node.participant} tags={tags} /> {node.step}
                </span>
                <span className="when">
                  {label(node.back, BACK_LABEL)} ({elapsed(node.back.elapsed_ms)})
                </span>
                {index > 0 && (
                  <span className="arrow backward" aria-hidden="true">
                    ←
                  </span>
                )}
              </div>
            ) : turn && turn.step === node.step ? (
              <div className="node back turn undo" data-outcome="undo" title={turn.text}>
                <span className="head">↙ compensating</span>
                <span className="when">from here ({elapsed(turn.elapsed_ms)})</span>
                {index > 0 && (
                  <span className="arrow backward" aria-hidden="true">
                    ←
                  </span>
                )}
              </div>
            ) : null}
          </li>
        );
      })}
    </ol>
  );
}

export function EventLog({ events }: { events: readonly SagaEvent[] }) {
  const tags = badges(events);
  return (
    <table className="events">
      <caption>Saga log</caption>
      <thead>
        <tr>
          <th scope="col">#</th>
          <th scope="col">Time</th>
          <th scope="col">Service</th>
          <th scope="col">Event</th>
          <th scope="col">Step</th>
          <th scope="col">What happened</th>
        </tr>
      </thead>
      <tbody>
        {events.map((event) => (
          <tr key={event.seq} className={`outcome-${event.outcome}`} data-outcome={event.outcome}>
            <td>{event.seq}</td>
            <td className="time">{elapsed(event.elapsed_ms)}</td>
            <td>
              <Badge participant={event.participant} tags={tags} />
            </td>
            <td>{event.type}</td>
            <td>{event.step ?? ""}</td>
            <td>
              {event.outcome === "undo" && "↩ "}
              {event.text}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

const ACTIONS_BY_STATUS: Record<string, SagaAction[]> = {
  needs_attention: ["retry", "compensate", "resolve"],
  running: ["compensate"],
};

export function sagaActions(sagaId: string, subject: string, names: SagaAction[]): ActionSpec[] {
  return names.map((name) => {
    const label = name.charAt(0).toUpperCase() + name.slice(1);
    return {
      name,
      label,
      run: async (note: string) => {
        const answer = await api.act(sagaId, name, note);
        if (!answer.accepted) throw new Error(`${label} was not accepted for ${subject}`);
        return `${label} queued for ${subject}`;
      },
    };
  });
}

export function SagaDetailView({ id, feed, mode }: { id: string; feed: SagaFeed; mode: FeedMode }) {
  const { canAct } = useContext(SessionContext);
  const changed = useFeedTick(feed, 150, (row) => row.saga_id === id);
  const { data, error } = useResource(
    () => api.saga(id),
    [id, changed],
    mode === "polling" ? POLL_MS : undefined,
  );
  const back = (
    <p>
      <a href="#/">← All sagas</a>
    </p>
  );
  if (!data) {
    return (
      <section className="panel wide">
        {back}
        {error ? <p role="alert">{describeError(error)}</p> : <p>Loading {id}…</p>}
      </section>
    );
  }
  const { saga, trace_id: traceId, events } = data;
  const subject = saga.key ?? saga.saga_id;
  const tags = badges(events);
  const waiting = stepNodes(events).some((node) => node.forward?.type === "ApprovalRequested");
  const names: SagaAction[] | undefined = waiting
    ? ["approve", "reject"]
    : ACTIONS_BY_STATUS[saga.status];
  const lastEvent = events[events.length - 1];
  return (
    <section className="panel wide detail" aria-labelledby="saga-title">
      {back}
      <h2 id="saga-title">
        {subject} <StatusBadge status={saga.status} />
      </h2>
      {error && <p role="alert">{describeError(error)}</p>}
      <dl className="facts">
        <dt>Definition</dt>
        <dd>
          {saga.definition} v{saga.definition_version}
        </dd>
        <dt>Saga id</dt>
        <dd>
          <code>{saga.saga_id}</code>
        </dd>
        <dt>Trace id</dt>
        <dd>{traceId ? <code>{traceId}</code> : "none recorded"}</dd>
        <dt>Started</dt>
        <dd>{clock(saga.created_at)}</dd>
        <dt>Last change</dt>
        <dd>{lastEvent ? `${elapsed(lastEvent.elapsed_ms)} after the start` : "-"}</dd>
        {saga.current_step && (
          <>
            <dt>Current step</dt>
            <dd>{saga.current_step}</dd>
          </>
        )}
        {saga.reason && (
          <>
            <dt>Reason</dt>
            <dd className="reason">{saga.reason}</dd>
          </>
        )}
      </dl>
      {canAct && names && (
        <Actions subject={subject} actions={sagaActions(saga.saga_id, subject, names)} />
      )}
      <h3>Timeline</h3>
      {tags.size > 0 && (
        <p className="legend">
          {[...tags].map(([participant, tag]) => (
            <span key={participant}>
              [{tag}] {participant}
            </span>
          ))}
        </p>
      )}
      <Timeline events={events} />
      <EventLog events={events} />
    </section>
  );
}
