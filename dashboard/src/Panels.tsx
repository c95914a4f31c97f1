// The operator's panels: overall stats, needs-attention sagas (several at once),
// approvals, dead letters, circuit breakers and outbox lag.
import type { UseQueryResult } from "@tanstack/react-query";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useContext, type ReactNode } from "react";
import { api, STATUSES } from "./api";
import { Actions } from "./Actions";
import { storeName } from "./charts/options";
import { clock, seconds, shortId, statusLabel } from "./format";
import { asApiError } from "./hooks";
import { keys, usePolled, useStats } from "./queries";
import { SagaLink, SagaTable } from "./SagaTable";
import { sagaActions } from "./SagaActions";
import { describeError, SessionContext } from "./session";

export function Panel<T>({
  id,
  title,
  loaded,
  wide = false,
  children,
}: {
  id: string;
  title: ReactNode;
  loaded: Pick<UseQueryResult<T>, "data" | "error">;
  wide?: boolean;
  children: (data: T) => ReactNode;
}) {
  return (
    <section className={`panel${wide ? " wide" : ""}`} aria-labelledby={`${id}-title`}>
      <h2 id={`${id}-title`}>{title}</h2>
      {loaded.error && <p role="alert">{describeError(asApiError(loaded.error))}</p>}
      {loaded.data === undefined ? !loaded.error && <p>Loading…</p> : children(loaded.data)}
    </section>
  );
}

export function StatsPanel() {
  const loaded = useStats();
  return (
    <Panel id="stats" title="Overview" loaded={loaded} wide>
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

export function NeedsAttentionPanel() {
  const loaded = useQuery({
    queryKey: keys.attention,
    queryFn: () => api.search({ status: "needs_attention" }, 100, 0),
  });
  const title = `Needs attention${loaded.data ? ` (${loaded.data.total})` : ""}`;
  return (
    <Panel id="attention" title={title} loaded={loaded}>
      {(page) => (
        <SagaTable
          rows={page.items}
          caption="Sagas that need attention"
          columns={["saga", "step", "reason"]}
          actions={(row) => sagaActions(row.saga_id, row.key ?? row.saga_id, ["retry", "compensate", "resolve"])}
          selectable
        />
      )}
    </Panel>
  );
}

export function ApprovalsPanel() {
  const loaded = useQuery({ queryKey: keys.approvals, queryFn: api.approvals });
  const title = `Approvals${loaded.data ? ` (${loaded.data.items.length})` : ""}`;
  return (
    <Panel id="approvals" title={title} loaded={loaded}>
      {(found) => (
        <SagaTable
          rows={found.items}
          caption="Sagas waiting for an approval"
          columns={["saga", "step"]}
          actions={(row) => sagaActions(row.saga_id, row.key ?? row.saga_id, ["approve", "reject"])}
        />
      )}
    </Panel>
  );
}

export function DeadLettersPanel() {
  const { canAct } = useContext(SessionContext);
  const client = useQueryClient();
  const loaded = usePolled(keys.deadLetters, api.deadLetters);
  const title = `Dead letters${loaded.data ? ` (${loaded.data.depth})` : ""}`;
  return (
    <Panel id="dead-letters" title={title} loaded={loaded} wide>
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
                  <td>{letter.saga_id ? <SagaLink id={letter.saga_id} label={shortId(letter.saga_id)} /> : "-"}</td>
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
                              await client.invalidateQueries({ queryKey: ["system"] });
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

export function BreakersPanel() {
  const loaded = usePolled(keys.breakers, api.breakers);
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
                  <td title={breaker.store}>{storeName(breaker.store)}</td>
                  <td>
                    <span className={`breaker breaker-${breaker.state}`}>{statusLabel(breaker.state)}</span>
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

export function OutboxPanel() {
  const loaded = usePolled(keys.outbox, api.outbox);
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
                  <td title={lag.store}>{storeName(lag.store)}</td>
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
