// What each overview chart draws, as ECharts options built from the API's answers. Pure
// functions: the tests check them without a browser. Data items carry a name, so the
// description ECharts writes for a screen reader says which interval or step a value is.
import type { Backlog, Failures, Latency, Outcomes, Window } from "../api";
import type { ChartOption } from "./EChart";

export interface Palette {
  started: string;
  completed: string;
  compensated: string;
  needs_attention: string;
  running: string;
  text: string;
  line: string;
  grey: string;
}

export const LIGHT: Palette = {
  started: "#0969da",
  completed: "#1a7f37",
  compensated: "#8250df",
  needs_attention: "#cf222e",
  running: "#0969da",
  text: "#1f2328",
  line: "#d0d7de",
  grey: "#57606a",
};

export const DARK: Palette = {
  started: "#4493f8",
  completed: "#3fb950",
  compensated: "#ab7df8",
  needs_attention: "#f85149",
  running: "#4493f8",
  text: "#e6edf3",
  line: "#3d444d",
  grey: "#9198a1",
};

const pad = (n: number) => String(n).padStart(2, "0");

/** An interval's start as the axis shows it: to the second in a short window. */
export function intervalLabel(epochSeconds: number, window: Window): string {
  const at = new Date(epochSeconds * 1000);
  const time = `${pad(at.getHours())}:${pad(at.getMinutes())}`;
  return window === "15m" ? `${time}:${pad(at.getSeconds())}` : time;
}

function axes(palette: Palette) {
  const axisLine = { lineStyle: { color: palette.line } };
  const axisLabel = { color: palette.text };
  const splitLine = { lineStyle: { color: palette.line, opacity: 0.5 } };
  return { axisLine, axisLabel, splitLine };
}

export const OUTCOME_SERIES = ["started", "completed", "compensated", "needs_attention"] as const;

export function outcomesOption(found: Outcomes, palette: Palette): ChartOption {
  const labels = found.at.map((at) => intervalLabel(at, found.window));
  const style = axes(palette);
  return {
    color: OUTCOME_SERIES.map((name) => palette[name]),
    tooltip: { trigger: "axis", renderMode: "richText" },
    legend: { textStyle: { color: palette.text }, top: 0 },
    grid: { left: 40, right: 16, top: 32, bottom: 28 },
    xAxis: { type: "category", data: labels, ...style },
    yAxis: { type: "value", minInterval: 1, ...style },
    series: OUTCOME_SERIES.map((name) => ({
      name: name.replace("_", " "),
      type: name === "started" ? "line" : "bar",
      showSymbol: false,
      stack: name === "started" ? undefined : "ended",
      data: found.series[name].map((value, i) => ({ name: labels[i], value })),
    })),
  };
}

const ms = (seconds: number | null) => (seconds === null ? 0 : Math.round(seconds * 1000));

export function latencyOption(found: Latency, palette: Palette): ChartOption {
  const rows = found.steps.map((s) => (s.op === "compensation" ? `${s.step} (undo)` : s.step));
  const names = ["saga", ...rows];
  const pick = (p: "p50" | "p95" | "p99") =>
    [found.saga, ...found.steps].map((item, i) => ({ name: names[i], value: ms(item[p]) }));
  const style = axes(palette);
  return {
    color: [palette.completed, palette.started, palette.needs_attention],
    tooltip: { trigger: "axis", renderMode: "richText" },
    legend: { textStyle: { color: palette.text }, top: 0 },
    grid: { left: 150, right: 24, top: 32, bottom: 28 },
    xAxis: { type: "value", name: "ms", ...style },
    yAxis: { type: "category", data: names, inverse: true, ...style },
    series: (["p50", "p95", "p99"] as const).map((p) => ({
      name: p,
      type: "bar",
      data: pick(p),
    })),
  };
}

/** A failure group in words: its reason's pattern, which names its step if it is not
 * already named there ("charge_payment failed: card declined for $*"). */
export function failureLabel(group: { step: string | null; pattern: string }): string {
  if (!group.step || group.pattern.startsWith(group.step)) return group.pattern;
  return `${group.step}: ${group.pattern}`;
}

/** A store as a legend says it: the file or database, not the whole address. */
export function storeName(url: string): string {
  const path = url.split("?")[0] ?? url;
  return path.slice(path.lastIndexOf("/") + 1) || url;
}

export function failuresOption(found: Failures, palette: Palette): ChartOption {
  const names = found.items.map(failureLabel);
  const style = axes(palette);
  return {
    color: [palette.needs_attention],
    tooltip: { trigger: "item", renderMode: "richText" },
    grid: { left: 16, right: 24, top: 8, bottom: 24, containLabel: true },
    xAxis: { type: "value", minInterval: 1, ...style },
    yAxis: {
      type: "category",
      data: names,
      inverse: true,
      ...style,
      axisLabel: { ...style.axisLabel, width: 320, overflow: "truncate" },
    },
    series: [
      {
        name: "sagas",
        type: "bar",
        cursor: "pointer",
        data: found.items.map((group, i) => ({ name: names[i], value: group.count })),
      },
    ],
  };
}

export function backlogOption(found: Backlog, palette: Palette): ChartOption {
  const labels = found.at.map((at) => intervalLabel(at, "15m"));
  const style = axes(palette);
  const lags = found.stores.map((store) => ({
    name: `lag ${storeName(store.store)}`,
    type: "line",
    yAxisIndex: 1,
    showSymbol: false,
    data: store.lag_s.map((value, i) => ({ name: labels[i], value: value ?? 0 })),
  }));
  return {
    tooltip: { trigger: "axis", renderMode: "richText" },
    legend: { textStyle: { color: palette.text }, top: 0, type: "scroll" },
    grid: { left: 40, right: 48, top: 32, bottom: 28 },
    xAxis: { type: "category", data: labels, ...style },
    yAxis: [
      { type: "value", name: "dead letters", minInterval: 1, ...style },
      { type: "value", name: "lag s", ...style, splitLine: { show: false } },
    ],
    series: [
      {
        name: "dead letters",
        type: "line",
        step: "end",
        color: palette.needs_attention,
        data: found.dead_letters.map((value, i) => ({ name: labels[i], value })),
      },
      ...lags,
    ],
  };
}
