import { act, render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { SagaFeed } from "../src/api";
import { App } from "../src/App";
import { merge, PAGE_SIZE, SagaList } from "../src/SagaList";
import { type Call, FakeEventSource, fakeApi, installEventSource, NOW_S, OPERATOR, overviewRoutes, sagaRow } from "./fakes";

const SAGAS = [
  sagaRow({ saga_id: "order-103", status: "needs_attention", reason: "refund keeps failing", version: 9 }),
  sagaRow({ saga_id: "order-102", status: "compensated", reason: "charge_payment failed: card declined", version: 12 }),
  sagaRow({ saga_id: "order-101", status: "completed", version: 14 }),
];

function sagaCalls(calls: Call[]): URLSearchParams[] {
  return calls
    .filter((call) => call.url.startsWith("/api/sagas?"))
    .map((call) => new URL(call.url, "http://x").searchParams);
}

function rowsOf(table: HTMLElement): string[] {
  return within(table)
    .getAllByRole("row")
    .slice(1)
    .map((row) => within(row).getAllByRole("cell")[0]?.textContent ?? "");
}

function renderList(feed: SagaFeed) {
  render(<SagaList feed={feed} mode="live" />);
  return screen.findByRole("link", { name: "order-101" });
}

beforeEach(() => {
  installEventSource();
});

afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllGlobals();
});

describe("the saga list", () => {
  it("shows each saga with its status in colour, linking to its timeline", async () => {
    fakeApi(overviewRoutes(OPERATOR, SAGAS));
    await renderList(new SagaFeed());

    const table = screen.getByRole("table");
    expect(within(table).getAllByRole("columnheader").map((th) => th.textContent)).toEqual([
      "Saga", "Definition", "Status", "Step", "Started", "Changed", "Reason",
    ]);
    expect(rowsOf(table)).toEqual(["order-103", "order-102", "order-101"]);
    expect(screen.getByText("compensated", { selector: ".status" })).toHaveClass("status-compensated");
    expect(screen.getByText("needs attention", { selector: ".status" })).toHaveClass("status-needs_attention");
    expect(screen.getByText("charge_payment failed: card declined")).toBeInTheDocument();
    expect(screen.getByRole("link", { name: "order-102" })).toHaveAttribute("href", "#/sagas/order-102");
    expect(screen.getByText("1–3 of 3")).toBeInTheDocument();
  });

  it("takes changes from the stream without reloading: new sagas on top, changed ones move up", async () => {
    const calls = fakeApi(overviewRoutes(OPERATOR, SAGAS));
    const feed = new SagaFeed();
    feed.start();
    await renderList(feed);
    const stream = FakeEventSource.last();
    expect(stream.url).toBe("/api/stream"); // the session cookie goes with it, no token
    const loads = sagaCalls(calls).length;

    act(() => {
      stream.open();
      stream.saga(sagaRow({ saga_id: "order-104", status: "running", current_step: "reserve_stock", updated_at: NOW_S }));
    });
    const table = screen.getByRole("table");
    expect(rowsOf(table)).toEqual(["order-104", "order-103", "order-102", "order-101"]);
    expect(screen.getByText("1–4 of 4")).toBeInTheDocument();

    act(() => stream.saga(sagaRow({ saga_id: "order-104", status: "compensating", version: 5, updated_at: NOW_S })));
    act(() => stream.saga(sagaRow({ saga_id: "order-101", status: "completed", version: 15, reason: "late news", updated_at: NOW_S })));
    expect(rowsOf(table)).toEqual(["order-101", "order-104", "order-103", "order-102"]);
    expect(screen.getByText("compensating", { selector: ".status" })).toHaveClass("status-compensating");
    expect(screen.getByText("late news")).toBeInTheDocument();

    // An older change arriving late does not undo a newer one.
    act(() => stream.saga(sagaRow({ saga_id: "order-104", status: "running", version: 2 })));
    expect(screen.getByText("compensating", { selector: ".status" })).toBeInTheDocument();
    expect(sagaCalls(calls)).toHaveLength(loads);
    feed.stop();
  });

  it("falls back to polling the list when the stream drops, and tries the stream again", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    const sagas = [...SAGAS];
    const calls = fakeApi(overviewRoutes(OPERATOR, sagas));
    render(<App feed={new SagaFeed(10_000)} />);
    await screen.findByRole("link", { name: "order-101" });
    const first = FakeEventSource.last();
    act(() => first.open());
    expect(screen.getByText("live")).toBeInTheDocument();

    act(() => first.fail());
    expect(first.closed).toBe(true);
    expect(screen.getByText("stream lost: polling")).toBeInTheDocument();
    sagas.unshift(sagaRow({ saga_id: "order-105", status: "running", updated_at: NOW_S }));
    const before = sagaCalls(calls).length;
    await act(() => vi.advanceTimersByTimeAsync(3100));

    expect(await screen.findByRole("link", { name: "order-105" })).toBeInTheDocument();
    expect(sagaCalls(calls).length).toBeGreaterThan(before);

    await act(() => vi.advanceTimersByTimeAsync(10_000));
    const second = FakeEventSource.last();
    expect(second).not.toBe(first);
    await act(async () => second.open());
    expect(screen.getByText("live")).toBeInTheDocument();
  });

  it("filters by status, definition, order id and recency, and pages through", async () => {
    const many = Array.from({ length: PAGE_SIZE }, (_, i) => sagaRow({ saga_id: `order-${200 + i}` }));
    const calls = fakeApi([
      ["GET", /^\/api\/sagas$/, () => ({ items: many, total: 120 })],
    ]);
    const user = userEvent.setup();
    render(<SagaList feed={new SagaFeed()} mode="live" />);
    await screen.findByText("1–50 of 120");
    expect(screen.getByRole("button", { name: "Previous" })).toBeDisabled();

    await user.click(screen.getByRole("button", { name: "Next" }));
    await waitFor(() => expect(sagaCalls(calls).at(-1)?.get("offset")).toBe("50"));
    await screen.findByText("51–100 of 120");

    await user.selectOptions(screen.getByLabelText("Status"), "compensated");
    await waitFor(() => expect(sagaCalls(calls).at(-1)?.get("status")).toBe("compensated"));
    expect(sagaCalls(calls).at(-1)?.get("offset")).toBe("0");

    await user.type(screen.getByLabelText("Definition"), "order");
    await user.type(screen.getByLabelText("Order id"), " order-102 {Enter}");
    await waitFor(() => expect(sagaCalls(calls).at(-1)?.get("key")).toBe("order-102"));
    expect(sagaCalls(calls).at(-1)?.get("definition")).toBe("order");

    await user.selectOptions(screen.getByLabelText("Changed within"), "1 hour");
    await waitFor(() => expect(sagaCalls(calls).at(-1)?.has("since")).toBe(true));
    const since = Number(sagaCalls(calls).at(-1)?.get("since"));
    expect(Math.abs(since - (Date.now() / 1000 - 3600))).toBeLessThan(60);

    await user.click(screen.getByRole("button", { name: "Clear" }));
    await waitFor(() => expect([...(sagaCalls(calls).at(-1)?.keys() ?? [])]).toEqual(["limit", "offset"]));
  });

  it("a live change that no longer matches the filters takes the saga off the page", () => {
    const page = { items: [sagaRow({ saga_id: "a", status: "running" })], total: 1 };
    const filters = { status: "running" as const, definition: "", key: "", withinS: null };

    const after = merge(page, sagaRow({ saga_id: "a", status: "completed", version: 2 }), filters, 0);

    expect(after).toEqual({ items: [], total: 0 });
    // ...and a new saga of another status does not join it.
    expect(merge(page, sagaRow({ saga_id: "b", status: "completed" }), filters, 0)).toBe(page);
  });
});
