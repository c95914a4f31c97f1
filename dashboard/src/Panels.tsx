// The operator's panels: overall stats, needs-attention sagas, approvals, dead letters,
// circuit breakers and outbox lag. They poll (dead letters, breakers and the outbox
// change without a saga changing) and also reload soon after the stream reports a change.
import { useContext, type ReactNode } from "react";
import { api, type SagaFeed, type SagaRow, STATUSES } from "./api";
import { type ActionSpec, Actions } from "./Actions";
import { clock, seconds, shortId, statusLabel } from "./format";
import { type Loaded, useFeedTick, useResource } from "./hooks";
import { sagaActions } from "./SagaDetail";
import { StatusBadge } from "./SagaList";
import { describeError, PANEL_POLL_MS, SessionContext } from "./session";

function Panel<T>({
  id,
  title,
  loaded,
  children,
}: {
  id: string;
  title: ReactNode;
  loaded: Loaded<T>;
  children: (data: T) => ReactNode;
}) {
  return (
    <section className="panel" aria-labelledby={`${id}-title`}>
      <h2 id={`${id}-title`}>{title}</h2>
      {loaded.error && <p role="alert">{describeError(loaded.error)}</p>}
      {loaded.data === undefined ? !loaded.error && <p>Loading…</p> : children(loaded.data)}
    </section>
  );
}

function usePanel<T>(feed: SagaFeed, load: () => Promise<T>): Loaded<T> {
  const changed = useFeedTick(feed, 1000);
  return useResource(load, [changed], PANEL_POLL_MS);
}

function sagaLink(row: SagaRow) {
  return <a href={`#/sagas/${encodeURIComponent(row.saga_id)}`}>{row.key ?? shortId(row.saga_id)}</a>;
}

export function StatsPanel({ feed }: { feed: SagaFeed }) {
  const loaded = usePanel(feed, api.stats);
  return (
    <Panel id="stats" title="Overview" loaded={loaded}>
      {(stats) => {
        const lags = Object.values(stats.outbox_lag_s);
        return (
          <dl className="stats">
            {STATUSES.map((status) => (
              <div key={status} className={`stat status-${status}`}>
                <dt>{statusLabel(status)}</dt>
                <dd>{stats.sagas[status] ?? 0}</dd>
              </div>
            ))}
            <div className="stat">
              <dt>in flight</dt>
              <dd>{stats.in_flight}</dd>
            </div>
            <div className="stat">
              <dt>waiting approval</dt>
              <dd>{stats.waiting_approval}</dd>
            </div>
            <div className={`stat ${stats.dead_letters ? "alarm" : ""}`}>
              <dt>dead letters</dt>
              <dd>{stats.dead_letters}</dd>
            </div>
            <div className="stat">
              <dt>outbox lag</dt>
              <dd>{lags.length ? seconds(Math.max(...lags)) : "-"}</dd>
            </div>
          </dl>
        );
      }}
    </Panel>
  );
}

function SagaRows({ rows, actions }: { rows: SagaRow[]; actions: (row: SagaRow) => ActionSpec[] }) {
  const { canAct } = useContext(SessionContext);
  if (rows.length === 0) return <p className="empty">None.</p>;
  return (
    <table>
      <thead>
        <tr>
          <th scope="col">Saga</th>
          <th scope="col">Status</th>
          <th scope="col">Step</th>
          <th scope="col">Reason</th>
          {canAct && <th scope="col">Actions</th>}
        </tr>
      </thead>
      <tbody>
        {rows.map((row) => (
          <tr key={row.saga_id}>
            <td>{sagaLink(row)}</td>
            <td>
              <StatusBadge status={row.status} />
            </td>
            <td>{row.current_step ?? ""}</td>
            <td className="reason">{row.reason ?? ""}</td>
            {canAct && (
              <td>
                <Actions subject={row.key ?? row.saga_id} actions={actions(row)} />
              </td>
            )}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function NeedsAttentionPanel({ feed }: { feed: SagaFeed }) {
  const loaded = usePanel(feed, () =>
    api.sagas({ status: "needs_attention", limit: 100, offset: 0 }),
  );
  const title = `Needs attention${loaded.data ? ` (${loaded.data.total})` : ""}`;
  return (
    <Panel id="attention" title={title} loaded={loaded}>
      {(page) => (
        <SagaRows
          rows={page.items}
          actions={(row) =>
            sagaActions(row.saga_id, row.key ?? row.saga_id, ["retry", "compensate", "resolve"])
          }
        />
      )}
    </Panel>
  );
}

export function ApprovalsPanel({ feed }: { feed: SagaFeed }) {
  const loaded = usePanel(feed, api.approvals);
  const title = `Approvals${loaded.data ? ` (${loaded.data.items.length})` : ""}`;
  return (
    <Panel id="approvals" title={title} loaded={loaded}>
      {(found) => (
        <SagaRows
          rows={found.items}
          actions={(row) => sagaActions(row.saga_id, row.key ?? row.saga_id, ["approve", "reject"])}
        />
      )}
    </Panel>
  );
}

export function DeadLettersPanel({ feed }: { feed: SagaFeed }) {
  const { canAct } = useContext(SessionContext);
  const loaded = usePanel(feed, api.deadLetters);
  const title = `Dead letters${loaded.data ? ` (${loaded.data.depth})` : ""}`;
  return (
    <Panel id="dead-letters" title={title} loaded={loaded}>
      {({ items }) =>
        items.length === 0 ? (
          <p className="empty">None.</p>
        ) : (
          <table>
            <thead>
              <tr>
                <th scope="col">Dead letter</th>
                <th scope="col">Queue</th>
                <th scope="col">Type</th>
                <th scope="col">Saga</th>
                <th scope="col">Reason</th>
                <th scope="col">Attempts</th>
                <th scope="col">Dead at</th>
                {canAct && <th scope="col">Actions</th>}
              </tr>
            </thead>
            <tbody>
              {items.map((letter) => (
                <tr key={letter.id}>
                  <td>
                    <code title={letter.id}>{shortId(letter.id)}</code>
                  </td>
                  <td>{letter.queue}</td>
                  <td>{letter.type ?? "-"}</td>
                  <td>
                    {letter.saga_id ? (
                      <a href={`#/sagas/${encodeURIComponent(letter.saga_id)}`}>
                        {shortId(letter.saga_id)}
                      </a>
                    ) : (
                      "-"
                    )}
                  </td>
                  <td className="reason">
                    <details>
                      <summary>{letter.reason}</summary>
                      <p>{letter.detail}</p>
                      <pre>{letter.body}</pre>
                    </details>
                  </td>
                  <td>{letter.attempts}</td>
                  <td>{clock(letter.dead_at)}</td>
                  {canAct && (
                    <td>
                      <Actions
                        subject={`dead letter ${shortId(letter.id)}`}
                        actions={[
                          {
                            name: "replay",
                            label: "Replay",
                            run: async (note) => {
                              const { replayed } = await api.replay(letter.id, note);
                              loaded.reload();
                              return `Replayed ${replayed} dead letter${replayed === 1 ? "" : "s"} (${shortId(letter.id)}) to ${letter.queue}`;
                            },
                          },
                        ]}
                      />
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        )
      }
    </Panel>
  );
}

export function BreakersPanel({ feed }: { feed: SagaFeed }) {
  const loaded = usePanel(feed, api.breakers);
  return (
    <Panel id="breakers" title="Circuit breakers" loaded={loaded}>
      {({ items }) =>
        items.length === 0 ? (
          <p className="empty">None.</p>
        ) : (
          <table>
            <thead>
              <tr>
                <th scope="col">Breaker</th>
                <th scope="col">Store</th>
                <th scope="col">State</th>
                <th scope="col">Failures</th>
                <th scope="col">Opened</th>
                <th scope="col">Changed</th>
              </tr>
            </thead>
            <tbody>
              {items.map((breaker) => (
                <tr key={`${breaker.store}/${breaker.name}`}>
                  <td>{breaker.name}</td>
                  <td>{breaker.store}</td>
                  <td>
                    <span className={`breaker breaker-${breaker.state}`}>
                      {statusLabel(breaker.state)}
                    </span>
                  </td>
                  <td>{breaker.failures}</td>
                  <td>{clock(breaker.opened_at)}</td>
                  <td>{clock(breaker.updated_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )
      }
    </Panel>
  );
}

export function OutboxPanel({ feed }: { feed: SagaFeed }) {
  const loaded = usePanel(feed, api.outbox);
  return (
    <Panel id="outbox" title="Outbox lag" loaded={loaded}>
      {({ items }) =>
        items.length === 0 ? (
          <p className="empty">None.</p>
        ) : (
          <table>
            <thead>
              <tr>
                <th scope="col">Store</th>
                <th scope="col">Lag</th>
                <th scope="col">Unsent</th>
              </tr>
            </thead>
            <tbody>
              {items.map((lag) => (
                <tr key={lag.store} className={lag.unsent ? "lagging" : ""}>
                  <td>{lag.store}</td>
                  <td>{seconds(lag.lag_s)}</td>
                  <td>{lag.unsent}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )
      }
    </Panel>
  );
}
