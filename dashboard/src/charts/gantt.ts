// One saga's tries on a time axis: a row per step and direction, a bar per try from its
// request to its answer, the retry waits between them, and the saga's moments as lines.
import type { CustomSeriesRenderItemAPI, CustomSeriesRenderItemParams } from "echarts";
import type { Bar, SagaTimeline, Wait } from "../api";
import { elapsed } from "../format";
import type { ChartOption } from "./EChart";
import type { Palette } from "./options";

export interface Row {
  key: string;
  step: string;
  op: Bar["op"];
  participant: string | null;
  label: string;
}

const rowKey = (step: string, op: string) => `${step}/${op === "compensation" ? "undo" : "do"}`;

/** The rows, in the order their first try began: a step's action (or approval), and
 * below the actions, its compensation. Labels say the service: "charge · payment". */
export function ganttRows(timeline: SagaTimeline): Row[] {
  const rows = new Map<string, Row>();
  const ordered = [...timeline.bars].sort((a, b) => a.start - b.start || a.start_seq - b.start_seq);
  for (const bar of ordered) {
    const key = rowKey(bar.step, bar.op);
    if (rows.has(key)) continue;
    const pivot = bar.step === timeline.pivot ? " ◆ pivot" : "";
    const service = bar.participant ? ` · ${bar.participant}` : "";
    const undo = bar.op === "compensation" ? "↩ " : "";
    rows.set(key, { key, step: bar.step, op: bar.op, participant: bar.participant, label: `${undo}${bar.step}${service}${pivot}` });
  }
  return [...rows.values()];
}

export function outcomeColour(outcome: Bar["outcome"], op: Bar["op"], palette: Palette): string {
  switch (outcome) {
    case "succeeded":
      return palette.completed;
    case "compensated":
      return palette.compensated;
    case "failed":
    case "timed_out":
      return palette.needs_attention;
    case "deferred":
      return palette.grey;
    default:
      return op === "compensation" ? palette.compensated : palette.running;
  }
}

/** Where a bar (or wait) ends on the axis: its answer, or now while it runs. */
export const endOf = (item: Bar | Wait, now: number) => item.end ?? Math.max(now, item.start);

export function barName(bar: Bar): string {
  const what = bar.op === "compensation" ? "compensation" : bar.op;
  return `${bar.step} ${what} try ${bar.attempt}`;
}

/** Each bar in words, from the saga's start: "charge action try 1 succeeded, 120ms to 450ms". */
export function describeBars(timeline: SagaTimeline, now: number): string {
  const start = timeline.started_at ?? 0;
  return timeline.bars
    .map((bar) => {
      const from = elapsed((bar.start - start) * 1000);
      const to = bar.end === null ? "now" : elapsed((bar.end - start) * 1000);
      return `${barName(bar)} ${bar.outcome.replace("_", " ")}, ${from} to ${to}`;
    })
    .concat(timeline.waits.map((w) => `${w.step} waited ${elapsed((endOf(w, now) - w.start) * 1000)} before try ${w.attempt}`))
    .join("; ");
}

function rectangle(height: number) {
  return (params: CustomSeriesRenderItemParams, api: CustomSeriesRenderItemAPI) => {
    const row = api.value(0) as number;
    const from = api.coord([api.value(1), row]) as number[];
    const to = api.coord([api.value(2), row]) as number[];
    const tall = (api.size?.([0, 1]) as number[])[1] ?? 20;
    const x = from[0] ?? 0;
    const width = Math.max((to[0] ?? 0) - x, 2); // an instant answer still shows
    const coords = params.coordSys as unknown as { x: number; y: number; width: number; height: number };
    return {
      type: "rect",
      shape: { x, y: (from[1] ?? 0) - (tall * height) / 2, width, height: tall * height },
      style: api.style(),
      // keep the bar inside the plot when the axis is zoomed
      clipPath: { type: "rect", shape: { x: coords.x, y: coords.y, width: coords.width, height: coords.height } },
    };
  };
}

const MARKED = new Set(["SagaStarted", "CompensationStarted", "SagaCompleted", "SagaCompensated", "SagaNeedsAttention", "OperatorIntervened"]);

export function ganttOption(timeline: SagaTimeline, rows: Row[], now: number, palette: Palette): ChartOption {
  const index = new Map(rows.map((row, i) => [row.key, i]));
  const ms = (seconds: number) => seconds * 1000;
  const first = timeline.started_at ?? Math.min(...timeline.bars.map((b) => b.start));
  const last = timeline.ended_at ?? now;
  const textStyle = { color: palette.text };
  return {
    tooltip: { trigger: "item", renderMode: "richText" },
    grid: { left: 16, right: 32, top: 28, bottom: 48, containLabel: true },
    dataZoom: [{ type: "inside", xAxisIndex: 0, filterMode: "weakFilter" }, { type: "slider", xAxisIndex: 0, height: 16, bottom: 8, filterMode: "weakFilter" }],
    xAxis: {
      type: "time",
      min: ms(first),
      max: ms(Math.max(last, first + 0.001)),
      // offsets from the saga's start: which step took the time reads at a glance
      axisLabel: { ...textStyle, hideOverlap: true, formatter: (value: number) => `+${elapsed(value - ms(first))}` },
      axisLine: { lineStyle: { color: palette.line } },
      splitLine: { show: true, lineStyle: { color: palette.line, opacity: 0.5 } },
    },
    yAxis: {
      type: "category",
      data: rows.map((row) => row.label),
      inverse: true,
      axisLabel: textStyle,
      axisLine: { lineStyle: { color: palette.line } },
    },
    series: [
      {
        name: "tries",
        type: "custom",
        renderItem: rectangle(0.6),
        encode: { x: [1, 2], y: 0 },
        data: timeline.bars.map((bar) => ({
          name: `${barName(bar)}: ${bar.outcome.replace("_", " ")}`,
          value: [index.get(rowKey(bar.step, bar.op)) ?? 0, ms(bar.start), ms(endOf(bar, now))],
          itemStyle: { color: outcomeColour(bar.outcome, bar.op, palette) },
        })),
        markLine: {
          symbol: "none",
          silent: true,
          lineStyle: { color: palette.grey, type: "dashed" },
          label: { color: palette.text, formatter: "{b}", position: "end", rotate: 0, fontSize: 10 },
          data: timeline.marks
            .filter((mark) => MARKED.has(mark.type))
            .map((mark) => ({ name: mark.type.replace("Saga", "").replace("Started", " started").trim(), xAxis: ms(mark.at) })),
        },
      },
      {
        name: "waits",
        type: "custom",
        renderItem: rectangle(0.25),
        encode: { x: [1, 2], y: 0 },
        data: timeline.waits.map((wait) => ({
          name: `${wait.step} waits for try ${wait.attempt}`,
          value: [index.get(rowKey(wait.step, wait.op)) ?? 0, ms(wait.start), ms(endOf(wait, now))],
          itemStyle: { color: palette.grey, opacity: 0.6 },
        })),
      },
    ],
  };
}
