// One saga: its facts (definition, pinned rules, trace), its tries on a time axis with
// the waits between them, what each step received and gave back, and its full log.
import { useQuery } from "@tanstack/react-query";
import { useContext, useMemo, useState } from "react";
import { Link, useParams } from "react-router";
import { api, type Bar, type SagaAction, type SagaEvent, type SagaTimeline } from "./api";
import { Actions } from "./Actions";
import { EChart } from "./charts/EChart";
import { barName, describeBars, ganttOption, ganttRows } from "./charts/gantt";
import { clock, elapsed } from "./format";
import { asApiError } from "./hooks";
import { DataPair, Inspector } from "./Inspector";
import { usePalette } from "./Overview";
import { keys } from "./queries";
import { sagaActions } from "./SagaActions";
import { StatusBadge } from "./SagaTable";
import { describeError, SessionContext } from "./session";

export function EventLog({ events }: { events: readonly SagaEvent[] }) {
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
            <td>{event.participant ?? ""}</td>
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

/** What an operator may do with a saga in this state. */
function actionsFor(timeline: SagaTimeline): SagaAction[] | undefined {
  const waiting = timeline.bars.some((bar) => bar.op === "approval" && bar.end === null);
  if (waiting) return ["approve", "reject"];
  if (timeline.status === "needs_attention") return ["retry", "compensate", "resolve"];
  if (timeline.status === "running") return ["compensate"];
  return undefined;
}

const since = (start: number | null, at: number | null) =>
  at === null || start === null ? "now" : `+${elapsed((at - start) * 1000)}`;

function Tries({ timeline, chosen, choose }: { timeline: SagaTimeline; chosen: number; choose: (i: number) => void }) {
  return (
    <table className="tries">
      <caption>Tries, from the saga's start</caption>
      <thead>
        <tr>
          <th scope="col">Step</th>
          <th scope="col">Service</th>
          <th scope="col">Try</th>
          <th scope="col">Requested</th>
          <th scope="col">Answered</th>
          <th scope="col">Took</th>
          <th scope="col">Outcome</th>
          <th scope="col">Data</th>
        </tr>
      </thead>
      <tbody>
        {timeline.bars.map((bar, i) => (
          <tr key={`${bar.start_seq}`} className={i === chosen ? "chosen" : ""} data-outcome={bar.outcome} data-start={bar.start} data-end={bar.end ?? ""}>
            <td>
              {bar.op === "compensation" ? "↩ " : ""}
              {bar.step}
              {bar.step === timeline.pivot && <span className="pivot"> ◆ pivot</span>}
            </td>
            <td>{bar.participant ?? ""}</td>
            <td>
              {bar.op === "approval" ? "approval" : bar.op === "compensation" ? "undo" : "do"} {bar.attempt}
            </td>
            <td className="time">{since(timeline.started_at, bar.start)}</td>
            <td className="time">{since(timeline.started_at, bar.end)}</td>
            <td className="time">{bar.end === null ? "running" : elapsed((bar.end - bar.start) * 1000)}</td>
            <td className={`outcome ${bar.outcome}`}>
              {bar.outcome.replace("_", " ")}
              {bar.reason ? `: ${bar.reason}` : ""}
            </td>
            <td>
              <button type="button" aria-pressed={i === chosen} onClick={() => choose(i)} aria-label={`Inspect ${barName(bar)}`}>
                Inspect
              </button>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function Gantt({ timeline, choose }: { timeline: SagaTimeline; choose: (i: number) => void }) {
  const palette = usePalette();
  const now = Date.now() / 1000;
  const rows = useMemo(() => ganttRows(timeline), [timeline]);
  const option = useMemo(() => ganttOption(timeline, rows, now, palette), [timeline, rows, palette]);
  if (timeline.bars.length === 0) return <p className="empty">No steps yet.</p>;
  const height = `gantt rows-${Math.min(rows.length, 16)}`;
  return (
    <EChart
      option={option}
      title="The saga's tries on a time axis"
      className={`chart ${height}`}
      description={describeBars(timeline, now)}
      onPick={(index, series) => series === 0 && choose(index)}
    />
  );
}

function Facts({ timeline }: { timeline: SagaTimeline }) {
  const saga = timeline.saga;
  if (!saga) return null;
  return (
    <dl className="facts">
      <dt>Definition</dt>
      <dd>
        <Link to={`/definitions/${encodeURIComponent(saga.definition)}/${saga.definition_version}`}>
          {saga.definition} v{saga.definition_version}
        </Link>
      </dd>
      <dt>Saga id</dt>
      <dd>
        <code>{saga.saga_id}</code>
      </dd>
      <dt>Trace id</dt>
      <dd>
        {timeline.trace_id === null ? (
          "none recorded"
        ) : timeline.trace_url ? (
          <a href={timeline.trace_url} target="_blank" rel="noreferrer">
            <code>{timeline.trace_id}</code>
          </a>
        ) : (
          <code>{timeline.trace_id}</code>
        )}
      </dd>
      <dt>Routing rules</dt>
      <dd>{timeline.rules_version === null ? "none pinned" : `version ${timeline.rules_version}`}</dd>
      <dt>Started</dt>
      <dd>{clock(saga.created_at)}</dd>
      <dt>Took</dt>
      <dd>
        {timeline.ended_at && timeline.started_at
          ? elapsed((timeline.ended_at - timeline.started_at) * 1000)
          : `running for ${elapsed((Date.now() / 1000 - saga.created_at) * 1000)}`}
      </dd>
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
  );
}

export function SagaDetailView({ id }: { id: string }) {
  const { canAct } = useContext(SessionContext);
  const drawn = useQuery({ queryKey: keys.timeline(id), queryFn: () => api.timeline(id) });
  const logged = useQuery({ queryKey: keys.saga(id), queryFn: () => api.saga(id) });
  const [picked, setPicked] = useState<number | null>(null);
  const back = (
    <p>
      <Link to="/sagas">← All sagas</Link>
    </p>
  );
  const timeline = drawn.data;
  if (!timeline?.saga) {
    const error = drawn.error ?? logged.error;
    return (
      <section className="panel wide">
        {back}
        {error ? <p role="alert">{describeError(asApiError(error))}</p> : <p>Loading {id}…</p>}
      </section>
    );
  }
  const saga = timeline.saga;
  const subject = saga.key ?? saga.saga_id;
  const names = actionsFor(timeline);
  // the try chosen, else the last that failed, else the last
  const failedLast = timeline.bars.map((bar) => bar.outcome).lastIndexOf("failed");
  const chosen = picked ?? (failedLast >= 0 ? failedLast : timeline.bars.length - 1);
  const bar: Bar | undefined = timeline.bars[chosen];
  return (
    <section className="panel wide detail" aria-labelledby="saga-title">
      {back}
      <h2 id="saga-title">
        {subject} <StatusBadge status={saga.status} />
      </h2>
      {drawn.error && <p role="alert">{describeError(asApiError(drawn.error))}</p>}
      {timeline.unreadable && <p role="alert">The log cannot be read past {timeline.unreadable}.</p>}
      <Facts timeline={timeline} />
      {canAct && names && <Actions subject={subject} actions={sagaActions(saga.saga_id, subject, names)} />}
      <h3>Timeline</h3>
      <p className="legend" aria-hidden="true">
        <span className="key succeeded">succeeded</span> <span className="key failed">failed</span>{" "}
        <span className="key compensated">compensated</span> <span className="key running">running</span>{" "}
        <span className="key deferred">waiting (retry or deferral)</span>
      </p>
      <Gantt timeline={timeline} choose={setPicked} />
      <Tries timeline={timeline} chosen={chosen} choose={setPicked} />
      {bar && <Inspector bar={bar} />}
      <details className="data">
        <summary>The saga's data: at the start and now</summary>
        <DataPair first={["At the start", timeline.data.initial]} second={["Now", timeline.data.final]} />
      </details>
      {logged.data && <EventLog events={logged.data.events} />}
    </section>
  );
}

export function SagaPage() {
  const { sagaId = "" } = useParams();
  return <SagaDetailView key={sagaId} id={sagaId} />;
}
