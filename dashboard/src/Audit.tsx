// The record of operator actions: who did what to which saga or dead letter, and why,
// newest first, from /api/audit, a page at a time and narrowed to one target if asked.
// The target and the page live in the address, so a saga's record can be linked to.
import { type FormEvent, useEffect, useState } from "react";
import { useSearchParams } from "react-router";
import { type AuditAction, api, DEAD_LETTER_ACTIONS } from "./api";
import { dateTime } from "./format";
import { Panel } from "./Panels";
import { keys, usePolled } from "./queries";
import { SagaLink } from "./SagaTable";

export const AUDIT_PAGE_SIZE = 100;

/** The page the address asks for: whole actions from the newest, never below 0. */
export function offsetFrom(params: URLSearchParams): number {
  const offset = Number(params.get("offset") ?? 0);
  return Number.isSafeInteger(offset) && offset > 0 ? offset : 0;
}

/** The API gives no total: a page is asked for with one action more than it shows, and
 * that one's presence says there are older ones. */
export function pageOf(items: AuditAction[], size: number): { shown: AuditAction[]; older: boolean } {
  return { shown: items.slice(0, size), older: items.length > size };
}

function Target({ action }: { action: AuditAction }) {
  if (DEAD_LETTER_ACTIONS.has(action.action)) {
    return (
      <>
        dead letter <code>{action.target}</code>
      </>
    );
  }
  return <SagaLink id={action.target} label={action.target} />;
}

function Row({ action }: { action: AuditAction }) {
  // Notes are people's words: rendered as text, never as markup.
  return (
    <tr>
      <td>
        <time dateTime={new Date(action.at * 1000).toISOString()}>{dateTime(action.at)}</time>
      </td>
      <td>{action.who}</td>
      <td>{action.action}</td>
      <td>
        <Target action={action} />
      </td>
      <td className="audit-note">{action.note || "-"}</td>
      <td>{action.via}</td>
    </tr>
  );
}

export function AuditPage() {
  const [params, setParams] = useSearchParams();
  const target = params.get("target") ?? "";
  const offset = offsetFrom(params);
  const [draft, setDraft] = useState(target);
  useEffect(() => setDraft(target), [target]);
  const asked = AUDIT_PAGE_SIZE + 1;
  const loaded = usePolled(keys.audit(target, asked, offset), () => api.audit(target, asked, offset));

  function go(nextTarget: string, nextOffset: number) {
    const next = new URLSearchParams();
    if (nextTarget) next.set("target", nextTarget);
    if (nextOffset > 0) next.set("offset", String(nextOffset));
    setParams(next);
  }

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    go(draft.trim(), 0);
  }

  const { shown, older } = pageOf(loaded.data?.items ?? [], AUDIT_PAGE_SIZE);
  return (
    <Panel id="audit" title="Audit" loaded={{ data: true, error: loaded.error }} wide>
      {() => (
        <>
          <p className="note">Every operator action on sagas and dead letters, through the admin API or the CLI, newest first.</p>
          <form className="filters" role="search" aria-label="Filter the record" onSubmit={submit}>
            <label>
              Target (a saga or dead letter id)
              <input type="search" name="target" value={draft} onChange={(event) => setDraft(event.target.value)} />
            </label>
            <button type="submit">Filter</button>
            <button type="button" disabled={!target} onClick={() => go("", 0)}>
              Show all
            </button>
          </form>
          {loaded.data === undefined ? (
            !loaded.error && <p>Loading…</p>
          ) : shown.length === 0 ? (
            <p className="empty">
              {offset > 0 ? "No older actions." : target ? `No action on record for ${target}.` : "No operator action on record yet."}
            </p>
          ) : (
            <table className="audit">
              <caption>Operator actions, newest first</caption>
              <thead>
                <tr>
                  <th scope="col">When</th>
                  <th scope="col">Who</th>
                  <th scope="col">Action</th>
                  <th scope="col">Target</th>
                  <th scope="col">Note</th>
                  <th scope="col">Via</th>
                </tr>
              </thead>
              <tbody>
                {shown.map((action) => (
                  <Row key={action.id} action={action} />
                ))}
              </tbody>
            </table>
          )}
          <nav className="pages" aria-label="Pages">
            <button type="button" disabled={offset === 0} onClick={() => go(target, Math.max(0, offset - AUDIT_PAGE_SIZE))}>
              Newer
            </button>
            <span>{shown.length ? `${offset + 1}–${offset + shown.length}` : "none"}</span>
            <button type="button" disabled={!older} onClick={() => go(target, offset + AUDIT_PAGE_SIZE)}>
              Older
            </button>
          </nav>
        </>
      )}
    </Panel>
  );
}
