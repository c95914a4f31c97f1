import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { type Bar, SagaFeed, type SagaTimeline } from "../src/api";
import { App } from "../src/App";
import { fakeApi, installEventSource, OPERATOR, overviewRoutes, sagaRow, timelineOf, VIEWER } from "./fakes";

const T0 = 1_700_000_000;
const SAGA = sagaRow({ saga_id: "order-501", status: "compensated", reason: "charge_payment failed: card declined", created_at: T0, updated_at: T0 + 1.2 });

function bar(step: string, op: Bar["op"], start: number, end: number | null, outcome: Bar["outcome"], extra: Partial<Bar> = {}): Bar {
  return {
    step, op, attempt: 1, participant: step === "reserve_stock" ? "inventory" : "payment", kind: "compensatable",
    start: T0 + start, end: end === null ? null : T0 + end, start_seq: Math.round(start * 1000), end_seq: null,
    outcome, reason: null, input: { order_id: "order-501" }, reply: null, data_after: null, ...extra,
  };
}

const TIMELINE: SagaTimeline = timelineOf(SAGA, {
  trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
  trace_url: "http://jaeger.example/trace/4bf92f3577b34da6a3ce929d0e0e4736",
  ended_at: T0 + 1.2,
  rules_version: 3,
  pivot: "schedule_shipment",
  bars: [
    bar("reserve_stock", "action", 0, 0.3, "succeeded", { reply: { reserved: 1 }, data_after: { order_id: "order-501", reserved: 1 } }),
    bar("charge_payment", "action", 0.3, 0.5, "failed", { attempt: 1, reason: "gateway timeout", reply: { reason: "gateway timeout", retryable: true } }),
    bar("charge_payment", "action", 0.7, 0.9, "failed", { attempt: 2, reason: "card declined", reply: { reason: "card declined", retryable: false } }),
    bar("reserve_stock", "compensation", 0.9, 1.2, "compensated", { input: { order_id: "order-501", _reason: "card declined" }, reply: { null: false } }),
  ],
  waits: [{ step: "charge_payment", op: "action", attempt: 2, participant: "payment", start: T0 + 0.5, due: T0 + 0.7, end: T0 + 0.7 }],
  marks: [{ seq: 1, type: "SagaStarted", at: T0, step: null, text: "started" }],
});

function routes(me = OPERATOR, timeline: unknown = TIMELINE) {
  return overviewRoutes(me, [SAGA], [
    ["GET", /^\/api\/sagas\/order-501\/timeline$/, () => timeline],
    ["GET", /^\/api\/sagas\/order-501$/, () => ({ saga: SAGA, trace_id: null, events: [] })],
  ]);
}

beforeEach(() => {
  installEventSource();
  window.location.hash = "#/sagas/order-501";
});
afterEach(() => vi.unstubAllGlobals());

describe("one saga's page", () => {
  it("lists every try with its times from the start, and the waits between them", async () => {
    fakeApi(routes());
    render(<App feed={new SagaFeed()} />);
    const tries = await screen.findByRole("table", { name: "Tries, from the saga's start" });
    const rows = within(tries).getAllByRole("row").slice(1);
    expect(rows.map((row) => within(row).getAllByRole("cell").slice(0, 7).map((c) => c.textContent))).toEqual([
      ["reserve_stock", "inventory", "do 1", "+0ms", "+300ms", "300ms", "succeeded"],
      ["charge_payment", "payment", "do 1", "+300ms", "+500ms", "200ms", "failed: gateway timeout"],
      ["charge_payment", "payment", "do 2", "+700ms", "+900ms", "200ms", "failed: card declined"],
      ["↩ reserve_stock", "inventory", "undo 1", "+900ms", "+1.2s", "300ms", "compensated"],
    ]);
    const chart = screen.getByRole("img", { name: /^The saga's tries on a time axis/ });
    expect(chart.getAttribute("aria-label")).toContain("charge_payment waited 200ms before try 2");
  });

  it("inspects the last failed try first, and any other on asking", async () => {
    fakeApi(routes());
    const user = userEvent.setup();
    render(<App feed={new SagaFeed()} />);
    expect(await screen.findByRole("heading", { name: "Data of charge_payment action try 2" })).toBeInTheDocument();
    const inspect = () => screen.getByRole("heading", { name: /^Data of/ }).closest("section") as HTMLElement;
    expect(within(inspect()).getByRole("figure", { name: "Reply" })).toHaveTextContent("card declined");

    await user.click(screen.getByRole("button", { name: "Inspect reserve_stock compensation try 1" }));

    expect(screen.getByRole("heading", { name: "Data of reserve_stock compensation try 1" })).toBeInTheDocument();
    expect(within(inspect()).getByRole("figure", { name: "Input" })).toHaveTextContent("_reason");
  });

  it("links the trace to its viewer and names the pinned rules", async () => {
    fakeApi(routes());
    render(<App feed={new SagaFeed()} />);
    const trace = await screen.findByRole("link", { name: "4bf92f3577b34da6a3ce929d0e0e4736" });
    expect(trace).toHaveAttribute("href", TIMELINE.trace_url);
    expect(screen.getByText("version 3")).toBeInTheDocument();
    expect(screen.getByRole("link", { name: "order v1" })).toHaveAttribute("href", "#/definitions/order/1");
  });

  it("offers an operator what a saga needing attention allows, and a viewer nothing", async () => {
    const stuck = { ...TIMELINE, status: "needs_attention" as const, saga: { ...SAGA, status: "needs_attention" as const } };
    fakeApi(routes(OPERATOR, stuck));
    const { unmount } = render(<App feed={new SagaFeed()} />);
    await screen.findByRole("heading", { name: /order-501/ });
    const actions = screen.getAllByRole("button").map((b) => b.textContent).filter((t) => /^(Retry|Compensate|Resolve)$/.test(t ?? ""));
    expect(actions).toEqual(["Retry", "Compensate", "Resolve"]);
    unmount();

    fakeApi(routes(VIEWER, stuck));
    render(<App feed={new SagaFeed()} />);
    await screen.findByRole("heading", { name: /order-501/ });
    expect(screen.queryAllByRole("button", { name: /^(Retry|Compensate|Resolve)$/ })).toEqual([]);
  });

  it("keeps the page when an answer breaks the view, and says so", async () => {
    fakeApi(routes(VIEWER, { ...TIMELINE, bars: null }));
    vi.spyOn(console, "error").mockImplementation(() => {});
    render(<App feed={new SagaFeed()} />);
    expect(await screen.findByRole("heading", { name: "This view failed" })).toBeInTheDocument();
    expect(screen.getByRole("navigation", { name: "Views" })).toBeInTheDocument();
    expect(screen.getByRole("link", { name: "Back to the overview" })).toBeInTheDocument();
  });
});
