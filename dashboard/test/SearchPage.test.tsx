import { act, render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { SagaFeed } from "../src/api";
import { App } from "../src/App";
import { criteriaFrom } from "../src/SearchPage";
import { type Call, FakeEventSource, fakeApi, installEventSource, NOW_S, OPERATOR, overviewRoutes, sagaRow, VIEWER } from "./fakes";

const SAGAS = [
  sagaRow({ saga_id: "order-103", status: "needs_attention", reason: "refund keeps failing" }),
  sagaRow({ saga_id: "order-104", status: "needs_attention", reason: "refund keeps failing" }),
  sagaRow({ saga_id: "order-101", status: "completed" }),
];

const searches = (calls: Call[]) =>
  calls.filter((call) => call.url.startsWith("/api/search?")).map((call) => Object.fromEntries(new URL(call.url, "http://x").searchParams));

beforeEach(() => {
  installEventSource();
});
afterEach(() => vi.unstubAllGlobals());

describe("finding sagas", () => {
  it("reads its criteria from the address, so a search can be linked to", () => {
    const params = new URLSearchParams("key=order-1*&reason=declined&step=charge_payment&version=2&status=compensated&within=3600&sort=duration");
    expect(criteriaFrom(params, 10_000)).toEqual({
      key: "order-1*",
      reason: "declined",
      step: "charge_payment",
      definition: undefined,
      version: 2,
      status: "compensated",
      since: 6400,
      sort: "duration",
    });
    expect(criteriaFrom(new URLSearchParams("status=bogus&version=x")).status).toBeUndefined();
  });

  it("asks the API by key, reason and step, and sorts by duration", async () => {
    window.location.hash = "#/sagas";
    const calls = fakeApi(overviewRoutes(VIEWER, SAGAS));
    const user = userEvent.setup();
    render(<App feed={new SagaFeed()} />);
    const form = await screen.findByRole("search", { name: "Find sagas" });
    await user.type(within(form).getByLabelText("Business key"), "order-10*");
    await user.type(within(form).getByLabelText("Reason contains"), "keeps failing");
    await user.type(within(form).getByLabelText("Stopped at step"), "charge_payment");
    await user.click(within(form).getByRole("button", { name: "Search" }));
    await user.selectOptions(within(form).getByLabelText("Sort by"), "duration");

    await waitFor(() =>
      expect(searches(calls).at(-1)).toEqual({
        key: "order-10*",
        reason: "keeps failing",
        step: "charge_payment",
        sort: "duration",
        limit: "50",
        offset: "0",
      }),
    );
    expect(window.location.hash).toContain("sort=duration");
  });

  it("lets an operator act on several sagas that need attention at once", async () => {
    window.location.hash = "#/sagas";
    const calls = fakeApi(
      overviewRoutes(OPERATOR, SAGAS, [["POST", /^\/api\/bulk\/resolve$/, () => ({ status: 202, body: { accepted: ["order-103", "order-104"], unknown: [] } })]]),
    );
    const user = userEvent.setup();
    render(<App feed={new SagaFeed()} />);
    await user.click(await screen.findByRole("checkbox", { name: "Select order-103" }));
    await user.click(screen.getByRole("checkbox", { name: "Select order-104" }));
    expect(screen.queryByRole("checkbox", { name: "Select order-101" })).toBeNull(); // completed
    await user.click(screen.getByRole("button", { name: "Resolve selected" }));
    await user.type(screen.getByLabelText("Note (required)"), "refunded by hand");
    await user.click(screen.getByRole("button", { name: "Confirm resolve selected" }));

    expect(await screen.findByText("Resolve queued for 2 sagas")).toBeInTheDocument();
    expect(calls.filter((call) => call.method === "POST").map((call) => [call.url, call.body])).toEqual([
      ["/api/bulk/resolve", { saga_ids: ["order-103", "order-104"], note: "refunded by hand" }],
    ]);
  });

  it("gives a viewer nothing to choose or act with", async () => {
    window.location.hash = "#/sagas";
    fakeApi(overviewRoutes(VIEWER, SAGAS));
    render(<App feed={new SagaFeed()} />);
    await screen.findByRole("link", { name: "order-103" });
    expect(screen.queryAllByRole("checkbox")).toEqual([]);
    expect(screen.queryAllByRole("button", { name: /^(Retry|Compensate|Resolve)/ })).toEqual([]);
  });

  it("loads the list again when the live stream, opened with the session alone, tells of a change", async () => {
    window.location.hash = "#/sagas";
    const calls = fakeApi(overviewRoutes(VIEWER, SAGAS));
    render(<App feed={new SagaFeed()} />);
    await screen.findByRole("link", { name: "order-103" });
    const stream = FakeEventSource.last();
    expect(stream.url).toBe("/api/stream"); // the session cookie goes with it, no token
    const loads = searches(calls).length;

    act(() => {
      stream.open();
      stream.saga(sagaRow({ saga_id: "order-105", status: "running", updated_at: NOW_S }));
    });

    expect(await screen.findByText("live")).toBeInTheDocument();
    await waitFor(() => expect(searches(calls).length).toBeGreaterThan(loads), { timeout: 5000 });
    expect(calls.every((call) => call.auth === null)).toBe(true);
  });
});
