// Sagas as a table: a link to each, the columns a view asks for, each row's actions
// for an operator, and (for an operator, where asked) a choice of several sagas that
// need attention to act on at once.
import { useContext, useEffect, useMemo, useState } from "react";
import { Link } from "react-router";
import type { SagaRow } from "./api";
import { type ActionSpec, Actions } from "./Actions";
import { clock, elapsed, shortId, statusLabel } from "./format";
import { bulkActions } from "./SagaActions";
import { SessionContext } from "./session";

export type Column = "saga" | "definition" | "status" | "step" | "started" | "changed" | "duration" | "reason";

const HEADINGS: Record<Column, string> = {
  saga: "Saga",
  definition: "Definition",
  status: "Status",
  step: "Step",
  started: "Started",
  changed: "Changed",
  duration: "Duration",
  reason: "Reason",
};

export function StatusBadge({ status }: { status: string }) {
  return <span className={`status status-${status}`}>{statusLabel(status)}</span>;
}

export const sagaPath = (id: string) => `/sagas/${encodeURIComponent(id)}`;

export function SagaLink({ id, label }: { id: string; label: string }) {
  return <Link to={sagaPath(id)}>{label}</Link>;
}

function Cell({ row, column }: { row: SagaRow; column: Column }) {
  switch (column) {
    case "saga":
      return (
        <td>
          <SagaLink id={row.saga_id} label={row.key ?? shortId(row.saga_id)} />
          {row.key && row.key !== row.saga_id && (
            <span className="id" title={row.saga_id}>
              {shortId(row.saga_id)}
            </span>
          )}
        </td>
      );
    case "definition":
      return (
        <td>
          <Link to={`/definitions/${encodeURIComponent(row.definition)}/${row.definition_version}`}>
            {row.definition} v{row.definition_version}
          </Link>
        </td>
      );
    case "status":
      return (
        <td>
          <StatusBadge status={row.status} />
        </td>
      );
    case "step":
      return <td>{row.current_step ?? ""}</td>;
    case "started":
      return <td>{clock(row.created_at)}</td>;
    case "changed":
      return <td>{clock(row.updated_at)}</td>;
    case "duration":
      return <td className="time">{elapsed((row.updated_at - row.created_at) * 1000)}</td>;
    case "reason":
      return <td className="reason">{row.reason ?? ""}</td>;
  }
}

export function SagaTable({
  rows,
  caption,
  columns,
  actions,
  selectable = false,
  className,
}: {
  rows: SagaRow[];
  caption: string;
  columns: Column[];
  actions?: (row: SagaRow) => ActionSpec[];
  /** Offer an operator a choice of the sagas that need attention, to act on at once. */
  selectable?: boolean;
  className?: string;
}) {
  const { canAct } = useContext(SessionContext);
  const [chosen, setChosen] = useState<ReadonlySet<string>>(new Set());
  const choosable = useMemo(
    () => (canAct && selectable ? rows.filter((row) => row.status === "needs_attention") : []),
    [rows, canAct, selectable],
  );
  // a saga that left the table (acted on, or no longer matching) is no longer chosen
  useEffect(() => {
    const shown = new Set(choosable.map((row) => row.saga_id));
    setChosen((now) => (([...now].every((id) => shown.has(id)) ? now : new Set([...now].filter((id) => shown.has(id))))));
  }, [choosable]);
  if (rows.length === 0) return <p className="empty">None.</p>;
  const choosing = choosable.length > 0;
  const all = choosing && choosable.every((row) => chosen.has(row.saga_id));
  const toggle = (id: string) =>
    setChosen((now) => {
      const next = new Set(now);
      if (!next.delete(id)) next.add(id);
      return next;
    });
  return (
    <>
      {choosing && (
        <div className="bulk" role="group" aria-label="Act on the selected sagas">
          <span>{chosen.size} selected</span>
          {chosen.size > 0 && (
            <Actions subject={`${chosen.size} sagas`} actions={bulkActions([...chosen], () => setChosen(new Set()))} />
          )}
        </div>
      )}
      <table className={className}>
        <caption className="visually-hidden">{caption}</caption>
        <thead>
          <tr>
            {choosing && (
              <th scope="col">
                <input
                  type="checkbox"
                  aria-label="Select every saga that needs attention"
                  checked={all}
                  onChange={() => setChosen(all ? new Set() : new Set(choosable.map((row) => row.saga_id)))}
                />
              </th>
            )}
            {columns.map((column) => (
              <th key={column} scope="col">
                {HEADINGS[column]}
              </th>
            ))}
            {canAct && actions && <th scope="col">Actions</th>}
          </tr>
        </thead>
        <tbody>
          {rows.map((row) => (
            <tr key={row.saga_id} data-status={row.status}>
              {choosing && (
                <td>
                  {row.status === "needs_attention" && (
                    <input
                      type="checkbox"
                      aria-label={`Select ${row.key ?? row.saga_id}`}
                      checked={chosen.has(row.saga_id)}
                      onChange={() => toggle(row.saga_id)}
                    />
                  )}
                </td>
              )}
              {columns.map((column) => (
                <Cell key={column} row={row} column={column} />
              ))}
              {canAct && actions && (
                <td>
                  <Actions subject={row.key ?? row.saga_id} actions={actions(row)} />
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}
