// What is happening to the system: outcomes, latency, failure reasons and the backlog
// over a chosen window, then the panels that need a person, and the latest sagas.
import { useQuery } from "@tanstack/react-query";
import { useMemo } from "react";
import { Link, useSearchParams } from "react-router";
import { api, type SearchCriteria, type Window, WINDOWS } from "./api";
import { EChart, useDark } from "./charts/EChart";
import { backlogOption, DARK, failureLabel, failuresOption, LIGHT, latencyOption, outcomesOption } from "./charts/options";
import { clock, interval } from "./format";
import {
  ApprovalsPanel,
  BreakersPanel,
  DeadLettersPanel,
  NeedsAttentionPanel,
  OutboxPanel,
  Panel,
  StatsPanel,
} from "./Panels";
import { keys, useBacklog, useFailures, useLatency, useOutcomes } from "./queries";
import { SagaTable } from "./SagaTable";

const WINDOW_WORDS: Record<Window, string> = { "15m": "15 minutes", "1h": "1 hour", "24h": "24 hours" };

export function usePalette() {
  return useDark() ? DARK : LIGHT;
}

/** The search page's address for some criteria. */
export function searchLink(criteria: SearchCriteria): string {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(criteria)) {
    if (value !== undefined && value !== null && value !== "") params.set(name, String(value));
  }
  return `/sagas?${params.toString()}`;
}

function WindowPicker({ window, choose }: { window: Window; choose: (w: Window) => void }) {
  return (
    <fieldset className="window">
      <legend>Window</legend>
      {WINDOWS.map((w) => (
        <label key={w} className={w === window ? "chosen" : ""}>
          <input type="radio" name="window" value={w} checked={w === window} onChange={() => choose(w)} />
          {WINDOW_WORDS[w]}
        </label>
      ))}
    </fieldset>
  );
}

function OutcomesChart({ window }: { window: Window }) {
  const loaded = useOutcomes(window);
  const palette = usePalette();
  const option = useMemo(() => loaded.data && outcomesOption(loaded.data, palette), [loaded.data, palette]);
  return (
    <Panel id="outcomes" title={`Sagas per ${loaded.data ? interval(loaded.data.every_s) : "interval"}`} loaded={loaded}>
      {() => option && <EChart option={option} title="Sagas started, completed, compensated and needing attention per interval" />}
    </Panel>
  );
}

function LatencyChart({ window }: { window: Window }) {
  const loaded = useLatency(window);
  const palette = usePalette();
  const option = useMemo(() => loaded.data && latencyOption(loaded.data, palette), [loaded.data, palette]);
  return (
    <Panel id="latency" title="Latency percentiles" loaded={loaded}>
      {(found) => (
        <>
          {option && <EChart option={option} title="Saga duration and each step's latency in milliseconds, p50, p95 and p99" className="chart tall" />}
          <p className="note">
            {found.saga.count} sagas ended in the window
            {found.all_read ? "" : `; the newest ${found.events_read} events were read`}.
          </p>
        </>
      )}
    </Panel>
  );
}

function FailuresChart({ window }: { window: Window }) {
  const loaded = useFailures(window);
  const palette = usePalette();
  const option = useMemo(() => loaded.data && failuresOption(loaded.data, palette), [loaded.data, palette]);
  return (
    <Panel id="failures" title="Failure reasons" loaded={loaded}>
      {(found) =>
        found.items.length === 0 ? (
          <p className="empty">No saga turned back or asked for a person in the window.</p>
        ) : (
          <>
            {option && <EChart option={option} title="Sagas by the step they stopped at and their reason" />}
            <ol className="failures">
              {found.items.map((group) => (
                <li key={failureLabel(group)}>
                  <Link to={searchLink({ step: group.step ?? undefined, reason: group.search.reason, since: group.search.since })}>
                    {group.count} × {failureLabel(group)}
                  </Link>{" "}
                  <span className="note">last {clock(group.last_at)}</span>
                </li>
              ))}
            </ol>
          </>
        )
      }
    </Panel>
  );
}

function BacklogChart({ window }: { window: Window }) {
  const loaded = useBacklog(window);
  const palette = usePalette();
  const option = useMemo(() => loaded.data && backlogOption(loaded.data, palette), [loaded.data, palette]);
  const found = loaded.data;
  const depth = found?.dead_letters[found.dead_letters.length - 1];
  const lag = found ? Math.max(0, ...found.stores.map((s) => s.lag_s[s.lag_s.length - 1] ?? 0)) : 0;
  return (
    <Panel id="backlog" title="Dead letters and outbox lag" loaded={loaded}>
      {(data) => (
        <>
          {option && (
            <EChart
              option={option}
              title="Dead-letter depth and outbox lag over time"
              description={`dead letters now ${depth ?? 0}, at most ${Math.max(0, ...data.dead_letters)}; outbox lag now ${lag.toFixed(1)} s.`}
            />
          )}
          <p className="note">
            Sampled every {data.sample_every_s} s by the admin API
            {data.sampling_since ? ` since ${clock(data.sampling_since)}` : ""}.
          </p>
        </>
      )}
    </Panel>
  );
}

function RecentSagas() {
  const loaded = useQuery({ queryKey: keys.search({}, 20, 0), queryFn: () => api.search({}, 20, 0) });
  return (
    <Panel id="recent" title="Latest changes" loaded={loaded} wide>
      {(page) => (
        <>
          <SagaTable
            rows={page.items}
            caption="The sagas that changed last"
            columns={["saga", "definition", "status", "step", "started", "changed", "reason"]}
            className="sagas"
          />
          <p>
            <Link to="/sagas">Search all {page.total} sagas</Link>
          </p>
        </>
      )}
    </Panel>
  );
}

export function Overview() {
  const [params, setParams] = useSearchParams();
  const asked = params.get("window");
  const window: Window = WINDOWS.includes(asked as Window) ? (asked as Window) : "1h";
  return (
    <>
      <StatsPanel />
      <section className="charts" aria-label="The system over time">
        <WindowPicker window={window} choose={(w) => setParams({ window: w }, { replace: true })} />
        <div className="columns">
          <OutcomesChart window={window} />
          <LatencyChart window={window} />
        </div>
        <div className="columns">
          <FailuresChart window={window} />
          <BacklogChart window={window} />
        </div>
      </section>
      <div className="columns">
        <NeedsAttentionPanel />
        <ApprovalsPanel />
      </div>
      <RecentSagas />
      <DeadLettersPanel />
      <div className="columns">
        <BreakersPanel />
        <OutboxPanel />
      </div>
    </>
  );
}
