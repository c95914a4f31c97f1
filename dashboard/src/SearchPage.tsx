// Finding sagas: by business key, reason text, the step they stopped at, definition and
// version, status and last change; newest change or longest first. The criteria live in
// the address, so a search can be linked to (the failure chart does) and reloaded.
import { useQuery } from "@tanstack/react-query";
import { type FormEvent, useEffect, useState } from "react";
import { useSearchParams } from "react-router";
import { api, type SagaStatus, type SearchCriteria, STATUSES } from "./api";
import { statusLabel } from "./format";
import { Panel } from "./Panels";
import { keys } from "./queries";
import { sagaActions } from "./SagaActions";
import { SagaTable } from "./SagaTable";

export const PAGE_SIZE = 50;

const TEXT_FIELDS = ["key", "reason", "step", "definition"] as const;
type TextField = (typeof TEXT_FIELDS)[number];

const LABELS: Record<TextField, [string, string]> = {
  key: ["Business key", "order-101 or order-1*"],
  reason: ["Reason contains", "card declined"],
  step: ["Stopped at step", "charge_payment"],
  definition: ["Definition", "order"],
};

const WITHIN: ReadonlyArray<[string, string]> = [
  ["", "any time"],
  ["300", "5 minutes"],
  ["3600", "1 hour"],
  ["86400", "1 day"],
  ["604800", "7 days"],
];

function number(text: string | null): number | undefined {
  if (text === null || text.trim() === "") return undefined;
  const value = Number(text);
  return Number.isFinite(value) ? value : undefined;
}

/** The criteria in the address: ?key=&reason=&step=&definition=&version=&status=&since=&within=&sort= */
export function criteriaFrom(params: URLSearchParams, nowS = Date.now() / 1000): SearchCriteria {
  const status = params.get("status");
  const within = number(params.get("within"));
  return {
    key: params.get("key") || undefined,
    reason: params.get("reason") || undefined,
    step: params.get("step") || undefined,
    definition: params.get("definition") || undefined,
    version: number(params.get("version")),
    status: STATUSES.includes(status as SagaStatus) ? (status as SagaStatus) : undefined,
    since: within !== undefined ? Math.floor(nowS - within) : number(params.get("since")),
    sort: params.get("sort") === "duration" ? "duration" : "changed",
  };
}

export function SearchPage() {
  const [params, setParams] = useSearchParams();
  const offset = number(params.get("offset")) ?? 0;
  const [criteria, setCriteria] = useState(() => criteriaFrom(params));
  const [draft, setDraft] = useState<Record<TextField | "version", string>>(() => ({
    key: params.get("key") ?? "",
    reason: params.get("reason") ?? "",
    step: params.get("step") ?? "",
    definition: params.get("definition") ?? "",
    version: params.get("version") ?? "",
  }));
  // "within" is read once per change of the address, not again on every render
  useEffect(() => setCriteria(criteriaFrom(params)), [params]);
  const loaded = useQuery({
    queryKey: keys.search(criteria, PAGE_SIZE, offset),
    queryFn: () => api.search(criteria, PAGE_SIZE, offset),
  });

  function change(next: Record<string, string>) {
    const merged = new URLSearchParams(params);
    for (const [name, value] of Object.entries(next)) {
      if (value) merged.set(name, value);
      else merged.delete(name);
    }
    if (!("offset" in next)) merged.delete("offset");
    setParams(merged);
  }

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    change(Object.fromEntries(Object.entries(draft).map(([name, value]) => [name, value.trim()])));
  }

  const total = loaded.data?.total ?? 0;
  const shown = loaded.data?.items.length ?? 0;
  return (
    <Panel id="sagas" title="Sagas" loaded={{ data: true, error: loaded.error }} wide>
      {() => (
        <>
          <form className="filters" role="search" aria-label="Find sagas" onSubmit={submit}>
            {TEXT_FIELDS.map((field) => (
              <label key={field}>
                {LABELS[field][0]}
                <input
                  type="search"
                  name={field}
                  value={draft[field]}
                  placeholder={LABELS[field][1]}
                  onChange={(event) => setDraft({ ...draft, [field]: event.target.value })}
                />
              </label>
            ))}
            <label>
              Version
              <input
                type="number"
                min={1}
                name="version"
                value={draft.version}
                onChange={(event) => setDraft({ ...draft, version: event.target.value })}
              />
            </label>
            <button type="submit">Search</button>
            <label>
              Status
              <select value={params.get("status") ?? ""} onChange={(event) => change({ status: event.target.value })}>
                <option value="">all</option>
                {STATUSES.map((status) => (
                  <option key={status} value={status}>
                    {statusLabel(status)}
                  </option>
                ))}
              </select>
            </label>
            <label>
              Changed within
              <select value={params.get("within") ?? ""} onChange={(event) => change({ within: event.target.value, since: "" })}>
                {WITHIN.map(([value, label]) => (
                  <option key={label} value={value}>
                    {label}
                  </option>
                ))}
              </select>
            </label>
            <label>
              Sort by
              <select value={criteria.sort} onChange={(event) => change({ sort: event.target.value === "duration" ? "duration" : "" })}>
                <option value="changed">last change</option>
                <option value="duration">duration, longest first</option>
              </select>
            </label>
            <button
              type="button"
              onClick={() => {
                setDraft({ key: "", reason: "", step: "", definition: "", version: "" });
                setParams(new URLSearchParams());
              }}
            >
              Clear
            </button>
          </form>
          {loaded.data && (
            <SagaTable
              rows={loaded.data.items}
              caption="Sagas found"
              columns={["saga", "definition", "status", "step", "started", "changed", "duration", "reason"]}
              actions={(row) =>
                row.status === "needs_attention"
                  ? sagaActions(row.saga_id, row.key ?? row.saga_id, ["retry", "compensate", "resolve"])
                  : []
              }
              selectable
              className="sagas"
            />
          )}
          <nav className="pages" aria-label="Pages">
            <button type="button" disabled={offset === 0} onClick={() => change({ offset: String(Math.max(0, offset - PAGE_SIZE)) })}>
              Previous
            </button>
            <span>
              {shown ? `${offset + 1}–${offset + shown}` : "0"} of {total}
            </span>
            <button type="button" disabled={offset + PAGE_SIZE >= total} onClick={() => change({ offset: String(offset + PAGE_SIZE) })}>
              Next
            </button>
          </nav>
        </>
      )}
    </Panel>
  );
}
