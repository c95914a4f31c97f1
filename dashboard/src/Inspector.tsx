// A try's data as JSON trees: what the step received, what it answered, and the saga's
// data once the answer was merged (each as the admin API's redaction left it).
import { allExpanded, defaultStyles, JsonView } from "react-json-view-lite";
import "react-json-view-lite/dist/index.css";
import type { Bar, JsonObject } from "./api";
import { barName } from "./charts/gantt";

// The tree's structure is the library's; its colours are the page's (readable in light
// and dark alike).
const TREE = {
  ...defaultStyles,
  container: "json-tree",
  label: "json-label",
  clickableLabel: "json-label json-clickable",
  stringValue: "json-string",
  numberValue: "json-number",
  booleanValue: "json-boolean",
  nullValue: "json-null",
  undefinedValue: "json-null",
  otherValue: "json-null",
  punctuation: "json-punctuation",
  expandIcon: `${defaultStyles.expandIcon} json-icon`,
  collapseIcon: `${defaultStyles.collapseIcon} json-icon`,
  collapsedContent: `${defaultStyles.collapsedContent} json-icon`,
};

function Tree({ label, data }: { label: string; data: JsonObject | null }) {
  return (
    <figure className="json" aria-label={label}>
      <figcaption>{label}</figcaption>
      {data === null ? (
        <p className="empty">none</p>
      ) : (
        <JsonView data={data} shouldExpandNode={allExpanded} style={TREE} aria-label={label} />
      )}
    </figure>
  );
}

export function DataPair({ first, second }: { first: [string, JsonObject | null]; second: [string, JsonObject | null] }) {
  return (
    <div className="inspector">
      <Tree label={first[0]} data={first[1]} />
      <Tree label={second[0]} data={second[1]} />
    </div>
  );
}

export function Inspector({ bar }: { bar: Bar }) {
  const replyLabel = bar.op === "compensation" ? "Its answer" : "Reply";
  return (
    <section className="inspect" aria-labelledby="inspect-title">
      <h3 id="inspect-title">Data of {barName(bar)}</h3>
      <div className="inspector">
        <Tree label="Input" data={bar.op === "approval" ? null : bar.input} />
        <Tree label={replyLabel} data={bar.reply} />
        <Tree label="Saga data after" data={bar.data_after} />
      </div>
    </section>
  );
}
