import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { SagaFeed } from "../src/api";
import { App } from "../src/App";
import { clock } from "../src/format";
import { fakeApi, installEventSource, NOW_S, OPERATOR, overviewRoutes, sagaRow, timelineOf, VIEWER } from "./fakes";

const SAGAS = [
  sagaRow({ saga_id: "order-103", status: "needs_attention", current_step: "charge_payment", reason: "refund keeps failing" }),
  sagaRow({ saga_id: "order-101", status: "completed" }),
];
const WAITING = sagaRow({ saga_id: "order-107", status: "running", current_step: "manual_approval" });
const ACTION_NAMES = /^(Retry|Compensate|Resolve|Approve|Reject|Replay)$/;

function routes(me = OPERATOR) {
  return overviewRoutes(me, SAGAS, [["GET", /^\/api\/approvals$/, () => ({ items: [WAITING] })]]);
}

function panel(name: RegExp): HTMLElement {
  return screen.getByRole("heading", { name }).closest("section") as HTMLElement;
}

beforeEach(() => {
  installEventSource();
});
afterEach(() => vi.unstubAllGlobals());

describe("an operator", () => {
  it("sees the panels with an action for each thing that can be acted on", async () => {
    fakeApi(routes());
    render(<App feed={new SagaFeed()} />);
    await screen.findByText("dl-0001");

    expect(screen.getByText("alice")).toBeInTheDocument();
    expect(screen.getByText("operator")).toBeInTheDocument();
    const attention = panel(/^Needs attention \(1\)$/);
    expect(within(attention).getByText("refund keeps failing")).toBeInTheDocument();
    expect(within(attention).getAllByRole("button").map((b) => b.textContent)).toEqual(["Retry", "Compensate", "Resolve"]);
    expect(within(panel(/^Approvals \(1\)$/)).getAllByRole("button").map((b) => b.textContent)).toEqual(["Approve", "Reject"]);
    expect(within(panel(/^Dead letters \(1\)$/)).getByRole("button", { name: "Replay" })).toBeInTheDocument();
    const overview = panel(/^Overview$/);
    expect(within(overview).getByText("completed").nextSibling).toHaveTextContent("12");
    expect(within(overview).getByText("outbox lag").nextSibling).toHaveTextContent("0.2 s");
    expect(within(panel(/^Outbox lag$/)).getByRole("cell", { name: "saga" })).toBeInTheDocument();
  });

  it("replays a dead letter with a note and is told it went back", async () => {
    const calls = fakeApi(routes().concat([["POST", /^\/api\/dead-letters\/dl-0001\/replay$/, () => ({ replayed: 1 })]]));
    const user = userEvent.setup();
    render(<App feed={new SagaFeed()} />);
    const letters = await waitFor(() => panel(/^Dead letters \(/));
    await user.click(await within(letters).findByRole("button", { name: "Replay" }));
    await user.type(within(letters).getByLabelText(/Note/), "payment handler fixed");
    await user.click(within(letters).getByRole("button", { name: "Confirm replay" }));

    expect(await screen.findByText(/Replayed 1 dead letter \(dl-0001\) to payment/)).toBeInTheDocument();
    const post = calls.find((call) => call.method === "POST");
    expect(post).toEqual({
      method: "POST",
      url: "/api/dead-letters/dl-0001/replay",
      auth: null, // the session cookie says who: the page holds no token
      body: { note: "payment handler fixed" },
    });
  });

  it("must say why to resolve, and the note goes with the action", async () => {
    const calls = fakeApi(routes().concat([["POST", /^\/api\/sagas\/order-103\/resolve$/, () => ({ status: 202, body: { accepted: true, saga_id: "order-103" } })]]));
    const user = userEvent.setup();
    render(<App feed={new SagaFeed()} />);
    const attention = await waitFor(() => panel(/^Needs attention \(1\)$/));
    await user.click(within(attention).getByRole("button", { name: "Resolve" }));
    const form = within(attention).getByRole("form", { name: "Resolve order-103" });
    expect(within(form).getByLabelText("Note (required)")).toBeRequired();

    await user.type(within(form).getByLabelText("Note (required)"), "refunded by hand");
    await user.click(within(form).getByRole("button", { name: "Confirm resolve" }));

    expect(await screen.findByText("Resolve queued for order-103")).toBeInTheDocument();
    expect(calls.filter((call) => call.method === "POST").map((call) => [call.url, call.body])).toEqual([
      ["/api/sagas/order-103/resolve", { note: "refunded by hand" }],
    ]);
  });

  it("is told plainly when the API refuses an action with 403", async () => {
    fakeApi(routes().concat([["POST", /\/approve$/, () => ({ status: 403, body: { detail: "viewers may not act" } })]]));
    const user = userEvent.setup();
    render(<App feed={new SagaFeed()} />);
    const approvals = await waitFor(() => panel(/^Approvals \(1\)$/));
    await user.click(within(approvals).getByRole("button", { name: "Approve" }));
    await user.click(within(approvals).getByRole("button", { name: "Confirm approve" }));

    expect(await within(approvals).findByRole("alert")).toHaveTextContent(
      "Not allowed (403): this token may look but not act. viewers may not act",
    );
    expect(screen.getByRole("status")).toHaveTextContent("Approve order-107: Not allowed (403)");
  });
});

describe("the panels", () => {
  it("show each breaker's state in colour and the outbox lag per store", async () => {
    const opened = NOW_S - 20;
    fakeApi(
      overviewRoutes(VIEWER, SAGAS, [
        [
          "GET",
          /^\/api\/breakers$/,
          () => ({
            items: [
              { store: "payment", name: "card-gateway", state: "open", failures: 5, opened_at: opened, updated_at: opened },
              { store: "shipping", name: "carrier", state: "closed", failures: 0, opened_at: null, updated_at: null },
            ],
          }),
        ],
        ["GET", /^\/api\/outbox$/, () => ({ items: [{ store: "payment", lag_s: 75, unsent: 12 }] })],
      ]),
    );
    render(<App feed={new SagaFeed()} />);
    const breakers = await waitFor(() => panel(/^Circuit breakers$/));
    const open = await within(breakers).findByText("open");

    expect(open).toHaveClass("breaker-open");
    expect(within(breakers).getByText("closed")).toHaveClass("breaker-closed");
    const gateway = open.closest("tr") as HTMLElement;
    expect(within(gateway).getAllByRole("cell").map((td) => td.textContent)).toEqual([
      "card-gateway", "payment", "open", "5", clock(opened), clock(opened),
    ]);
    const lagging = await within(panel(/^Outbox lag$/)).findByRole("row", { name: /payment/ });
    expect(lagging).toHaveClass("lagging");
    expect(within(lagging).getAllByRole("cell").map((td) => td.textContent)).toEqual(["payment", "1m 15s", "12"]);
  });
});

describe("a viewer", () => {
  it("sees everything an operator sees but no action buttons", async () => {
    fakeApi(routes(VIEWER));
    render(<App feed={new SagaFeed()} />);
    await screen.findByText("dl-0001");
    await within(await waitFor(() => panel(/^Needs attention/))).findByText("refund keeps failing");
    await screen.findByRole("link", { name: "order-107" });

    expect(screen.getByText("viewer")).toBeInTheDocument();
    expect(screen.queryAllByRole("button", { name: ACTION_NAMES })).toEqual([]);
    expect(screen.queryByRole("columnheader", { name: "Actions" })).toBeNull();
  });

  it("sees no actions on a saga's page either", async () => {
    fakeApi(
      routes(VIEWER).concat([
        ["GET", /^\/api\/sagas\/order-103$/, () => ({ saga: SAGAS[0], trace_id: null, events: [] })],
        ["GET", /^\/api\/sagas\/order-103\/timeline$/, () => timelineOf(SAGAS[0])],
      ]),
    );
    window.location.hash = "#/sagas/order-103";
    render(<App feed={new SagaFeed()} />);
    await screen.findByRole("heading", { name: /order-103/ });

    expect(screen.queryAllByRole("button", { name: ACTION_NAMES })).toEqual([]);
    expect(screen.getByText("none recorded")).toBeInTheDocument();
  });
});

describe("without a good token", () => {
  it("shows the token screen on 401, and a pasted token is exchanged for a session", async () => {
    let signedIn = false;
    const session: Parameters<typeof fakeApi>[0][number] = [
      "POST",
      /^\/api\/session$/,
      (call) => {
        signedIn = call.auth === "Bearer pasted";
        return signedIn ? OPERATOR : { status: 401, body: { detail: "token missing or wrong" } };
      },
    ];
    const calls = fakeApi([
      session,
      ...(routes().map(([method, path, answer]) =>
        [method, path, (call) => (signedIn ? answer(call) : { status: 401, body: { detail: "token missing or wrong" } })] as const,
      ) as Parameters<typeof fakeApi>[0]),
    ]);
    const user = userEvent.setup();
    render(<App feed={new SagaFeed()} />);

    expect(await screen.findByRole("heading", { name: "Token missing or wrong" })).toBeInTheDocument();
    expect(calls[0]?.auth).toBeNull();
    expect(screen.queryByRole("table")).toBeNull();

    await user.type(screen.getByLabelText("Token"), "pasted");
    await user.click(screen.getByRole("button", { name: "Use this token" }));

    expect(await screen.findByText("alice")).toBeInTheDocument();
    // The token went once, to be exchanged; nothing after it carries it, nothing keeps it.
    expect(calls.filter((call) => call.auth !== null).map((call) => call.url)).toEqual(["/api/session"]);
    expect(JSON.stringify({ ...sessionStorage, ...localStorage })).not.toContain("pasted");
  });

  it("shows the token screen when a token stops working mid-session", async () => {
    let revoked = false;
    const all = routes().concat([["GET", /^\/api\/sagas\/order-101$/, () => ({ saga: SAGAS[1], trace_id: null, events: [] })]]);
    fakeApi(all.map(([method, path, answer]) => [method, path, (call) => (revoked ? { status: 401, body: {} } : answer(call))] as const) as Parameters<typeof fakeApi>[0]);
    render(<App feed={new SagaFeed()} />);
    await screen.findByText("alice");

    revoked = true;
    await userEvent.setup().click(screen.getByRole("link", { name: "Sagas" }));

    expect(await screen.findByRole("heading", { name: "Token missing or wrong" })).toBeInTheDocument();
  });

  it("says so clearly when the API answers 403", async () => {
    fakeApi([["GET", /^\/api\/me$/, () => ({ status: 403, body: { detail: "this token is disabled" } })]]);
    render(<App feed={new SagaFeed()} />);

    expect(await screen.findByRole("heading", { name: "Not allowed" })).toBeInTheDocument();
    expect(screen.getByText(/refused this token \(403\): this token is disabled/)).toBeInTheDocument();
  });
});
