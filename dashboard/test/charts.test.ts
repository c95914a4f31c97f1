import { describe, expect, it } from "vitest";
import type { SagaTimeline } from "../src/api";
import { describeSeries } from "../src/charts/EChart";
import { describeBars, ganttOption, ganttRows } from "../src/charts/gantt";
import { failureLabel, LIGHT, latencyOption, outcomesOption, storeName } from "../src/charts/options";
import { definitionGraph } from "../src/Definitions";
import { LATENCY, OUTCOMES, sagaRow, timelineOf } from "./fakes";

describe("the overview's charts", () => {
  it("draw each outcome per interval, and say so in words", () => {
    const option = outcomesOption(OUTCOMES, LIGHT);
    const words = describeSeries(option);
    expect(words).toMatch(/^started: \d\d:\d\d:\d\d 2; \d\d:\d\d:\d\d 3; \d\d:\d\d:\d\d 0\. completed: /);
    expect(words).toContain("needs attention: ");
    const series = option.series as Array<{ name: string; stack?: string; type: string }>;
    expect(series.map((s) => [s.name, s.type, s.stack])).toEqual([
      ["started", "line", undefined],
      ["completed", "bar", "ended"],
      ["compensated", "bar", "ended"],
      ["needs attention", "bar", "ended"],
    ]);
  });

  it("give latency in milliseconds, the saga first, a compensation marked", () => {
    const words = describeSeries(latencyOption(LATENCY, LIGHT));
    expect(words).toBe(
      "p50: saga 1200; charge_payment 200; charge_payment (undo) 100. " +
        "p95: saga 2100; charge_payment 400; charge_payment (undo) 100. " +
        "p99: saga 2200; charge_payment 450; charge_payment (undo) 100.",
    );
  });

  it("name failures and stores briefly", () => {
    expect(failureLabel({ step: "charge", pattern: "charge failed: no" })).toBe("charge failed: no");
    expect(failureLabel({ step: "charge", pattern: "rejected by olga" })).toBe("charge: rejected by olga");
    expect(storeName("sqlite:////tmp/shop/payment.db")).toBe("payment.db");
    expect(storeName("postgresql://postgres@db:5432/shop_payment")).toBe("shop_payment");
  });
});

describe("a saga's timeline", () => {
  const T0 = 1000;
  const bar = (step: string, op: "action" | "compensation", start: number, end: number | null, outcome: "succeeded" | "failed" | "compensated" | "running") => ({
    step, op, attempt: 1, participant: "payment", kind: null, start: T0 + start, end: end === null ? null : T0 + end,
    start_seq: start * 10, end_seq: null, outcome, reason: null, input: null, reply: null, data_after: null,
  });
  const timeline: SagaTimeline = timelineOf(sagaRow({ saga_id: "s", created_at: T0 }), {
    pivot: "ship",
    bars: [bar("charge", "action", 0, 1, "succeeded"), bar("ship", "action", 1, 2, "failed"), bar("charge", "compensation", 2, null, "running")],
  });

  it("puts each step and its undoing on a row of its own, saying the service and the pivot", () => {
    expect(ganttRows(timeline).map((row) => row.label)).toEqual(["charge · payment", "ship · payment ◆ pivot", "↩ charge · payment"]);
  });

  it("draws each try from request to answer, a running one to now, in milliseconds", () => {
    const option = ganttOption(timeline, ganttRows(timeline), T0 + 5, LIGHT);
    const [tries] = option.series as Array<{ data: Array<{ value: number[] }> }>;
    expect(tries?.data.map((item) => item.value)).toEqual([
      [0, 1_000_000, 1_001_000],
      [1, 1_001_000, 1_002_000],
      [2, 1_002_000, 1_005_000],
    ]);
    expect(describeBars(timeline, T0 + 5)).toBe(
      "charge action try 1 succeeded, 0ms to 1.0s; ship action try 1 failed, 1.0s to 2.0s; charge compensation try 1 running, 2.0s to now",
    );
  });
});

describe("a definition's graph", () => {
  const step = (name: string, kind: "compensatable" | "pivot", compensation: string | null) => ({
    name, participant: "p", command: "c", compensation, kind, optional: false, timeout_s: 10, attempts: 3, on_timeout: null,
  });

  it("runs start, each stage, done; a parallel stage side by side; undo edges to compensated", () => {
    const { nodes, edges } = definitionGraph([[step("a", "compensatable", "undo_a")], [step("b", "compensatable", "undo_b"), step("c", "compensatable", "undo_c")], [step("d", "pivot", null)]]);
    expect(nodes.map((n) => n.id)).toEqual(["start", "step-a", "step-b", "step-c", "step-d", "done", "undone"]);
    const forward = edges.filter((e) => e.className !== "undo").map((e) => e.id);
    expect(forward).toEqual(["start->step-a", "step-a->step-b", "step-a->step-c", "step-b->step-d", "step-c->step-d", "step-d->done"]);
    expect(edges.filter((e) => e.className === "undo").map((e) => [e.source, e.label])).toEqual([
      ["step-a", "undo_a"],
      ["step-b", "undo_b"],
      ["step-c", "undo_c"],
    ]);
  });
});
