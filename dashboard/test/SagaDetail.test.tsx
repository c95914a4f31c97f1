import { act, cleanup, render, screen, within } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { type SagaDetail, SagaFeed } from "../src/api";
import { badges, SagaDetailView, stepNodes } from "../src/SagaDetail";
import { type Session, SessionContext } from "../src/session";
import { event, FakeEventSource, fakeApi, installEventSource, OPERATOR, sagaRow, VIEWER } from "./fakes";

// The example: payment and inventory succeed, shipping fails, the rest is undone.
const EVENTS = [
  event("SagaStarted", 0, "info", null, null, "started order v1 for order-501"),
  event("StepRequested", 0, "info", "create_order", "order"),
  event("StepSucceeded", 0, "ok", "create_order", "order", "create_order: succeeded"),
  event("StepRequested", 0, "info", "charge_payment", "payment"),
  event("StepSucceeded", 450, "ok", "charge_payment", "payment", "charge_payment: succeeded"),
  event("StepRequested", 450, "info", "reserve_stock", "inventory"),
  event("StepSucceeded", 1200, "ok", "reserve_stock", "inventory", "reserve_stock: succeeded"),
  event("StepRequested", 1200, "info", "schedule_shipment", "shipping"),
  event("StepFailed", 1310, "failed", "schedule_shipment", "shipping", "schedule_shipment: failed (we do not ship to antarctica)"),
  event("CompensationStarted", 1310, "undo", "schedule_shipment", null, "compensating because schedule_shipment failed: we do not ship to antarctica"),
  event("CompensationRequested", 1310, "undo", "reserve_stock", "inventory"),
  event("StepCompensated", 1400, "undo", "reserve_stock", "inventory", "reserve_stock: compensated"),
  event("CompensationRequested", 1500, "undo", "charge_payment", "payment", "charge_payment: compensation requested"),
  event("StepCompensated", 1800, "undo", "charge_payment", "payment", "charge_payment: compensated"),
  event("CompensationRequested", 1800, "undo", "create_order", "order"),
  event("StepCompensated", 1850, "undo", "create_order", "order", "create_order: compensated"),
  event("SagaCompensated", 1850, "undo", null, null, "compensated (schedule_shipment failed: we do not ship to antarctica)"),
];

const DETAIL: SagaDetail = {
  saga: sagaRow({
    saga_id: "order-501",
    status: "compensated",
    reason: "schedule_shipment failed: we do not ship to antarctica",
  }),
  trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
  events: EVENTS,
};

function renderDetail(session: Partial<Session> = {}, feed = new SagaFeed()) {
  const value: Session = { me: OPERATOR, canAct: true, notify: () => {}, ...session };
  render(
    <SessionContext.Provider value={value}>
      <SagaDetailView id="order-501" feed={feed} mode="live" />
    </SessionContext.Provider>,
  );
  return screen.findByRole("heading", { name: /order-501/ });
}

function node(lane: HTMLElement, text: RegExp): HTMLElement {
  const found = within(lane).getByText(text).closest(".node");
  if (!(found instanceof HTMLElement)) throw new Error(`no node with ${text}`);
  return found;
}

beforeEach(() => installEventSource());
afterEach(() => vi.unstubAllGlobals());

describe("one saga", () => {
  it("tells its status, reason and trace id", async () => {
    fakeApi([["GET", /^\/api\/sagas\/order-501$/, () => DETAIL]]);
    const heading = await renderDetail();

    expect(within(heading).getByText("compensated")).toHaveClass("status-compensated");
    expect(screen.getByText("4bf92f3577b34da6a3ce929d0e0e4736")).toBeInTheDocument();
    expect(screen.getByText("schedule_shipment failed: we do not ship to antarctica", { selector: "dd" })).toBeInTheDocument();
    expect(screen.getByText("order v1")).toBeInTheDocument();
  });

  it("draws the steps forward in green, the failure in red, and the compensations going back", async () => {
    fakeApi([["GET", /^\/api\/sagas\/order-501$/, () => DETAIL]]);
    await renderDetail();

    const lanes = within(screen.getByRole("list", { name: "Steps" })).getAllByRole("listitem");
    expect(lanes.map((lane) => lane.querySelector(".node .head")?.textContent)).toEqual([
      "[O] create_order",
      "[P] charge_payment",
      "[I] reserve_stock",
      "[S] schedule_shipment",
    ]);
    const [order, payment, inventory, shipping] = lanes as [HTMLElement, HTMLElement, HTMLElement, HTMLElement];
    expect(node(payment, /succeeded \(450ms\)/)).toHaveAttribute("data-outcome", "ok");
    expect(node(inventory, /succeeded \(1\.2s\)/)).toHaveClass("ok");
    expect(node(shipping, /FAILED \(1\.3s\)/)).toHaveAttribute("data-outcome", "failed");
    expect(node(shipping, /compensating/)).toHaveClass("undo");
    const refund = node(payment, /compensated \(1\.8s\)/);
    expect(refund).toHaveAttribute("data-outcome", "undo");
    expect(refund).toHaveTextContent("↩ [P] charge_payment");
    expect(node(order, /compensated \(1\.8s\)/)).toHaveClass("back");
    // The first step's compensation has no step before it to point back to.
    expect(node(order, /compensated/).querySelector(".arrow.backward")).toBeNull();
    expect(refund.querySelector(".arrow.backward")).not.toBeNull();
    expect(screen.getByText("[S] shipping")).toBeInTheDocument();
  });

  it("shows a step deferred by an open breaker as waiting, not as failed", async () => {
    const events = [
      event("SagaStarted", 0, "info", null, null, "started order v1 for order-502"),
      event("StepRequested", 0, "info", "charge_payment", "payment"),
      event("StepFailed", 30, "info", "charge_payment", "payment",
        "charge_payment: deferred (circuit breaker 'payment-gateway' is open; retry in 9.9s) - tries again when the dependency is back"),
    ];
    const detail = { ...DETAIL, saga: { ...DETAIL.saga, saga_id: "order-501", status: "running" as const }, events };
    fakeApi([["GET", /^\/api\/sagas\/order-501$/, () => detail]]);
    await renderDetail();

    const lanes = within(screen.getByRole("list", { name: "Steps" })).getAllByRole("listitem");
    const charge = node(lanes[0] as HTMLElement, /deferred \(30ms\)/);
    expect(charge).toHaveAttribute("data-outcome", "info");
    expect(screen.queryByText(/FAILED/)).toBeNull();
  });

  it("keeps a refund's retry on its way back, and the step's success on the way forward", async () => {
    const events = [
      event("SagaStarted", 0, "info", null, null, "started order v1 for order-503"),
      event("StepRequested", 0, "info", "charge_payment", "payment"),
      event("StepSucceeded", 40, "ok", "charge_payment", "payment", "charge_payment: succeeded"),
      event("CompensationStarted", 90, "undo", "schedule_shipment", null, "compensating because schedule_shipment failed"),
      event("CompensationRequested", 90, "undo", "charge_payment", "payment"),
      event("CompensationFailed", 120, "info", "charge_payment", "payment",
        "charge_payment: compensation deferred (circuit breaker 'payment-gateway' is open; retry in 9.9s) - tries again when the dependency is back"),
      event("RetryScheduled", 120, "undo", "charge_payment", "payment", "charge_payment: compensation retry 2 scheduled"),
    ];
    const detail = { ...DETAIL, saga: { ...DETAIL.saga, status: "compensating" as const }, events };
    fakeApi([["GET", /^\/api\/sagas\/order-501$/, () => detail]]);
    await renderDetail();

    const [payment] = within(screen.getByRole("list", { name: "Steps" })).getAllByRole("listitem");
    expect(node(payment as HTMLElement, /succeeded \(40ms\)/)).toHaveAttribute("data-outcome", "ok");
    expect(node(payment as HTMLElement, /retry scheduled \(120ms\)/)).toHaveClass("back");
  });

  it("lists every event with its time from the start, coloured by outcome", async () => {
    fakeApi([["GET", /^\/api\/sagas\/order-501$/, () => DETAIL]]);
    await renderDetail();

    const log = screen.getByRole("table", { name: "Saga log" });
    const rows = within(log).getAllByRole("row").slice(1);
    expect(rows).toHaveLength(EVENTS.length);
    const cells = (i: number) => within(rows[i] as HTMLElement).getAllByRole("cell").map((td) => td.textContent);
    expect(cells(0)).toEqual([String(EVENTS[0]?.seq), "0ms", "", "SagaStarted", "", "started order v1 for order-501"]);
    expect(cells(4)[1]).toBe("450ms");
    expect(rows[8]).toHaveClass("outcome-failed");
    expect(cells(8)[5]).toBe("schedule_shipment: failed (we do not ship to antarctica)");
    expect(rows[13]).toHaveAttribute("data-outcome", "undo");
    expect(cells(13)).toEqual([String(EVENTS[13]?.seq), "1.8s", "[P]", "StepCompensated", "charge_payment", "↩ charge_payment: compensated"]);
    expect(rows[6]).toHaveClass("outcome-ok");
  });

  it("grows as the saga moves on, reloading when the stream reports it", async () => {
    const detail = { ...DETAIL, saga: { ...DETAIL.saga, status: "running" as const }, events: EVENTS.slice(0, 5) };
    const calls = fakeApi([["GET", /^\/api\/sagas\/order-501$/, () => detail]]);
    const feed = new SagaFeed();
    feed.start();
    await renderDetail({}, feed);
    expect(screen.queryByText(/reserve_stock/)).toBeNull();

    detail.events = EVENTS.slice(0, 7);
    act(() => FakeEventSource.last().saga(sagaRow({ saga_id: "order-501", version: 7 })));
    act(() => FakeEventSource.last().saga(sagaRow({ saga_id: "order-999", version: 7 })));

    expect(await screen.findByText("reserve_stock: succeeded")).toBeInTheDocument();
    expect(calls).toHaveLength(2);
    feed.stop();
  });

  it("offers an operator the actions that fit its status, and a viewer none", async () => {
    const stuck = { ...DETAIL, saga: { ...DETAIL.saga, status: "needs_attention" as const } };
    fakeApi([["GET", /^\/api\/sagas\/order-501$/, () => stuck]]);
    await renderDetail();
    expect(screen.getAllByRole("button").map((b) => b.textContent)).toEqual(["Retry", "Compensate", "Resolve"]);
    cleanup();

    await renderDetail({ me: VIEWER, canAct: false });
    expect(screen.queryAllByRole("button")).toEqual([]);
  });

  it("shows a compensation that keeps failing in red, under the step that had succeeded", async () => {
    const stuck: SagaDetail = {
      saga: sagaRow({ saga_id: "order-501", status: "needs_attention", reason: "refund keeps failing" }),
      trace_id: null,
      events: [
        event("SagaStarted", 0, "info"),
        event("StepRequested", 0, "info", "charge_payment", "payment"),
        event("StepSucceeded", 450, "ok", "charge_payment", "payment", "charge_payment: succeeded"),
        event("StepRequested", 450, "info", "reserve_stock", "inventory"),
        event("StepFailed", 600, "failed", "reserve_stock", "inventory", "reserve_stock: failed (none left)"),
        event("CompensationStarted", 600, "undo", "reserve_stock"),
        event("CompensationRequested", 600, "undo", "charge_payment", "payment"),
        event("CompensationFailed", 2500, "failed", "charge_payment", "payment", "charge_payment: compensation failed"),
        event("SagaNeedsAttention", 2500, "failed", "charge_payment", null, "needs attention: refund keeps failing"),
      ],
    };
    fakeApi([["GET", /^\/api\/sagas\/order-501$/, () => stuck]]);
    await renderDetail();

    const [payment, inventory] = within(screen.getByRole("list", { name: "Steps" })).getAllByRole("listitem") as [HTMLElement, HTMLElement];
    // The charge did succeed: the saga's being stuck is its refund's story, told below it.
    expect(node(payment, /succeeded \(450ms\)/)).toHaveAttribute("data-outcome", "ok");
    const refund = node(payment, /COMPENSATION FAILED \(2\.5s\)/);
    expect(refund).toHaveClass("back");
    expect(refund).toHaveAttribute("data-outcome", "failed");
    expect(node(inventory, /FAILED \(600ms\)/)).toHaveAttribute("data-outcome", "failed");
    expect(screen.getByText("needs attention", { selector: "h2 .status" })).toHaveClass("status-needs_attention");
    expect(screen.getAllByRole("button").map((b) => b.textContent)).toEqual(["Retry", "Compensate", "Resolve"]);
  });

  it("says when a saga does not exist", async () => {
    fakeApi([["GET", /^\/api\/sagas\/order-501$/, () => ({ status: 404, body: { detail: "no saga 'order-501'" } })]]);
    render(<SagaDetailView id="order-501" feed={new SagaFeed()} mode="live" />);
    expect(await screen.findByRole("alert")).toHaveTextContent("Not found (404): no saga 'order-501'");
  });
});

describe("the timeline's parts", () => {
  it("counts a step's attempts and keeps its last outcome", () => {
    const nodes = stepNodes([
      event("StepRequested", 0, "info", "notify", "notification"),
      event("StepFailed", 10, "failed", "notify", "notification"),
      event("RetryScheduled", 10, "info", "notify", "notification"),
      event("StepRequested", 200, "info", "notify", "notification"),
      event("StepSucceeded", 250, "ok", "notify", "notification"),
    ]);
    expect(nodes).toHaveLength(1);
    expect(nodes[0]?.attempts).toBe(2);
    expect(nodes[0]?.forward?.type).toBe("StepSucceeded");
    expect(nodes[0]?.back).toBeUndefined();
  });

  it("gives participants distinct tags", () => {
    const tags = badges([
      event("StepRequested", 0, "info", "a", "order"),
      event("StepRequested", 0, "info", "b", "orchestra"),
      event("StepRequested", 0, "info", "c", "payment"),
    ]);
    expect([...tags.values()]).toEqual(["O", "Or", "P"]);
  });
});
