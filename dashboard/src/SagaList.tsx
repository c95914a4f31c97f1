// The saga list: newest change first, live, filtered, searchable by order id, in pages.
import { type FormEvent, useEffect, useRef, useState } from "react";
import {
  api,
  type FeedMode,
  type Page,
  type SagaFeed,
  type SagaRow,
  type SagaStatus,
  STATUSES,
} from "./api";
import { clock, shortId, statusLabel } from "./format";
import { asApiError } from "./hooks";
import { describeError, POLL_MS } from "./session";

export const PAGE_SIZE = 50;

export interface Filters {
  status: SagaStatus | "";
  definition: string;
  /** The business key, matched exactly: the shop's order id, e.g. order-101. */
  key: string;
  /** Only sagas changed within this many seconds, or any. */
  withinS: number | null;
}

const NO_FILTERS: Filters = { status: "", definition: "", key: "", withinS: null };

const WITHIN: ReadonlyArray<[number | null, string]> = [
  [null, "any time"],
  [300, "5 minutes"],
  [3600, "1 hour"],
  [86_400, "1 day"],
  [604_800, "7 days"],
];

export function StatusBadge({ status }: { status: string }) {
  return <span className={`status status-${status}`}>{statusLabel(status)}</span>;
}

export function matches(row: SagaRow, filters: Filters, nowS = Date.now() / 1000): boolean {
  return (
    (!filters.status || row.status === filters.status) &&
    (!filters.definition || row.definition === filters.definition) &&
    (!filters.key || row.key === filters.key) &&
    (filters.withinS === null || row.updated_at >= nowS - filters.withinS)
  );
}

/** The page after one change from the stream. The API lists newest change first, so on
 * the first page a change moves its saga to the top (a new one is added there); on later
 * pages a saga shown is updated where it is. A change older than what is shown is ignored;
 * a saga that no longer matches the filters leaves. */
export function merge(page: Page<SagaRow>, row: SagaRow, filters: Filters, offset: number) {
  const at = page.items.findIndex((shown) => shown.saga_id === row.saga_id);
  const shown = page.items[at];
  if (shown && shown.version > row.version) return page;
  const others = page.items.filter((item) => item.saga_id !== row.saga_id);
  if (!matches(row, filters)) {
    return shown ? { items: others, total: Math.max(0, page.total - 1) } : page;
  }
  if (offset > 0) {
    return shown ? { ...page, items: page.items.map((item, i) => (i === at ? row : item)) } : page;
  }
  return {
    items: [row, ...others].slice(0, PAGE_SIZE),
    total: shown ? page.total : page.total + 1,
  };
}

export function SagaList({ feed, mode }: { feed: SagaFeed; mode: FeedMode }) {
  const [filters, setFilters] = useState<Filters>(NO_FILTERS);
  const [draft, setDraft] = useState({ definition: "", key: "" });
  const [offset, setOffset] = useState(0);
  const [page, setPage] = useState<Page<SagaRow>>();
  const [error, setError] = useState<string>();
  const [poll, setPoll] = useState(0);
  const [known, setKnown] = useState<string[]>([]);
  // Changes that arrive while a page is loading, applied on top of what it brings.
  const late = useRef<SagaRow[] | null>(null);

  useEffect(() => {
    let current = true;
    late.current = [];
    const since = filters.withinS === null ? undefined : Date.now() / 1000 - filters.withinS;
    api
      .sagas({
        status: filters.status || undefined,
        definition: filters.definition || undefined,
        key: filters.key || undefined,
        since,
        limit: PAGE_SIZE,
        offset,
      })
      .then(
        (fetched) => {
          if (!current) return;
          const caught = late.current ?? [];
          late.current = null;
          setPage(caught.reduce((p, row) => merge(p, row, filters, offset), fetched));
          setError(undefined);
        },
        (failed: unknown) => {
          if (current) setError(describeError(asApiError(failed)));
        },
      );
    return () => {
      current = false;
    };
  }, [filters, offset, mode, poll]);

  useEffect(() => {
    if (mode !== "polling") return undefined;
    const timer = setInterval(() => setPoll((n) => n + 1), POLL_MS);
    return () => clearInterval(timer);
  }, [mode]);

  useEffect(
    () =>
      feed.onRow((row) => {
        late.current?.push(row);
        setPage((shown) => shown && merge(shown, row, filters, offset));
      }),
    [feed, filters, offset],
  );

  useEffect(() => {
    const names = new Set([...known, ...(page?.items ?? []).map((row) => row.definition)]);
    if (names.size > known.length) setKnown([...names].sort());
  }, [page, known]);

  function apply(next: Partial<Filters>) {
    setFilters((now) => ({ ...now, ...next }));
    setOffset(0);
  }

  function search(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    apply({ definition: draft.definition.trim(), key: draft.key.trim() });
  }

  const total = page?.total ?? 0;
  const shown = page?.items.length ?? 0;
  return (
    <section className="panel wide" aria-labelledby="sagas-title">
      <h2 id="sagas-title">Sagas</h2>
      <form className="filters" role="search" aria-label="Filter sagas" onSubmit={search}>
        <label>
          Status
          <select
            value={filters.status}
            onChange={(event) => apply({ status: event.target.value as SagaStatus | "" })}
          >
            <option value="">all</option>
            {STATUSES.map((status) => (
              <option key={status} value={status}>
                {statusLabel(status)}
              </option>
            ))}
          </select>
        </label>
        <label>
          Definition
          <input
            list="known-definitions"
            value={draft.definition}
            placeholder="any"
            onChange={(event) => setDraft({ ...draft, definition: event.target.value })}
          />
        </label>
        <datalist id="known-definitions">
          {known.map((name) => (
            <option key={name} value={name} />
          ))}
        </datalist>
        <label>
          Order id
          <input
            type="search"
            value={draft.key}
            placeholder="order-101"
            onChange={(event) => setDraft({ ...draft, key: event.target.value })}
          />
        </label>
        <label>
          Changed within
          <select
            value={filters.withinS ?? ""}
            onChange={(event) =>
              apply({ withinS: event.target.value ? Number(event.target.value) : null })
            }
          >
            {WITHIN.map(([value, label]) => (
              <option key={label} value={value ?? ""}>
                {label}
              </option>
            ))}
          </select>
        </label>
        <button type="submit">Search</button>
        <button
          type="button"
          onClick={() => {
            setDraft({ definition: "", key: "" });
            apply(NO_FILTERS);
          }}
        >
          Clear
        </button>
      </form>
      {error && <p role="alert">{error}</p>}
      <table className="sagas">
        <thead>
          <tr>
            <th scope="col">Saga</th>
            <th scope="col">Definition</th>
            <th scope="col">Status</th>
            <th scope="col">Step</th>
            <th scope="col">Started</th>
            <th scope="col">Changed</th>
            <th scope="col">Reason</th>
          </tr>
        </thead>
        <tbody>
          {page?.items.map((row) => (
            <tr key={row.saga_id} data-status={row.status}>
              <td>
                <a href={`#/sagas/${encodeURIComponent(row.saga_id)}`}>
                  {row.key ?? shortId(row.saga_id)}
                </a>
                {row.key && row.key !== row.saga_id && (
                  <span className="id" title={row.saga_id}>
                    {shortId(row.saga_id)}
                  </span>
                )}
              </td>
              <td>
                {row.definition} v{row.definition_version}
              </td>
              <td>
                <StatusBadge status={row.status} />
              </td>
              <td>{row.current_step ?? ""}</td>
              <td>{clock(row.created_at)}</td>
              <td>{clock(row.updated_at)}</td>
              <td className="reason">{row.reason ?? ""}</td>
            </tr>
          ))}
          {page && shown === 0 && (
            <tr>
              <td colSpan={7} className="empty">
                No sagas match.
              </td>
            </tr>
          )}
        </tbody>
      </table>
      <nav className="pages" aria-label="Pages">
        <button
          type="button"
          disabled={offset === 0}
          onClick={() => setOffset(Math.max(0, offset - PAGE_SIZE))}
        >
          Previous
        </button>
        <span>
          {shown ? `${offset + 1}–${offset + shown}` : "0"} of {total}
        </span>
        <button
          type="button"
          disabled={offset + PAGE_SIZE >= total}
          onClick={() => setOffset(offset + PAGE_SIZE)}
        >
          Next
        </button>
      </nav>
    </section>
  );
}
