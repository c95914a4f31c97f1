import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { type AuditAction, SagaFeed } from "../src/api";
import { App } from "../src/App";
import { AUDIT_PAGE_SIZE, offsetFrom } from "../src/Audit";
import { dateTime } from "../src/format";
import { type Call, fakeApi, installEventSource, NOW_S, overviewRoutes, VIEWER } from "./fakes";

const RETRY: AuditAction = {
  id: 2,
  at: NOW_S - 60,
  who: "olga",
  action: "retry",
  target: "order-103",
  note: "customer called <b>twice</b>",
  via: "api",
};
const REPLAY: AuditAction = { id: 1, at: NOW_S - 120, who: "root", action: "replay", target: "dl-0001", note: "", via: "cli" };

function actions(count: number): AuditAction[] {
  return Array.from({ length: count }, (_, n) => ({ ...RETRY, id: count - n, at: NOW_S - n, target: `order-${n}` }));
}

/** The record holds `record`; the fake answers each page as the API would. */
function serve(record: AuditAction[]): Call[] {
  return fakeApi(
    overviewRoutes(VIEWER, [], [
      [
        "GET",
        /^\/api\/audit$/,
        (call) => {
          const asked = new URL(call.url, "http://x").searchParams;
          const target = asked.get("target");
          const offset = Number(asked.get("offset"));
          const found = record.filter((action) => target === null || action.target === target);
          return { items: found.slice(offset, offset + Number(asked.get("limit"))) };
        },
      ],
    ]),
  );
}

const asked = (calls: Call[]) =>
  calls.filter((call) => call.url.startsWith("/api/audit?")).map((call) => Object.fromEntries(new URL(call.url, "http://x").searchParams));

const rows = () => within(screen.getByRole("table", { name: /Operator actions/ })).getAllByRole("row").slice(1);

beforeEach(() => {
  installEventSource();
});
afterEach(() => vi.unstubAllGlobals());

describe("the audit page", () => {
  it("lists each action with its time, who, target and note, a saga's target linked", async () => {
    window.location.hash = "#/audit";
    serve([RETRY, REPLAY]);
    render(<App feed={new SagaFeed()} />);
    const link = await screen.findByRole("link", { name: "order-103" });

    expect(link).toHaveAttribute("href", "#/sagas/order-103");
    expect(rows().map((row) => within(row).getAllByRole("cell").map((cell) => cell.textContent))).toEqual([
      [dateTime(RETRY.at), "olga", "retry", "order-103", "customer called <b>twice</b>", "api"],
      [dateTime(REPLAY.at), "root", "replay", "dead letter dl-0001", "-", "cli"],
    ]);
    const [, replayed] = rows();
    expect(within(replayed as HTMLElement).queryByRole("link")).toBeNull(); // a dead letter has no page
    expect(document.querySelector(".audit-note b")).toBeNull(); // the note is text, not markup
    expect(screen.getByRole("link", { name: "Audit" })).toHaveAttribute("aria-current", "page");
  });

  it("pages through a hundred at a time, older and newer", async () => {
    window.location.hash = "#/audit";
    const calls = serve(actions(AUDIT_PAGE_SIZE + 30));
    const user = userEvent.setup();
    render(<App feed={new SagaFeed()} />);
    await screen.findByRole("link", { name: "order-0" });
    expect(rows()).toHaveLength(AUDIT_PAGE_SIZE);
    expect(screen.getByRole("button", { name: "Newer" })).toBeDisabled();

    await user.click(screen.getByRole("button", { name: "Older" }));
    await screen.findByRole("link", { name: `order-${AUDIT_PAGE_SIZE}` });
    expect(rows()).toHaveLength(30);
    expect(screen.getByText(`${AUDIT_PAGE_SIZE + 1}–${AUDIT_PAGE_SIZE + 30}`)).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Older" })).toBeDisabled();
    expect(asked(calls).at(-1)).toEqual({ limit: String(AUDIT_PAGE_SIZE + 1), offset: String(AUDIT_PAGE_SIZE) });

    await user.click(screen.getByRole("button", { name: "Newer" }));
    await screen.findByRole("link", { name: "order-0" });
    expect(window.location.hash).toBe("#/audit");
  });

  it("narrows the record to one target, and says when it holds nothing", async () => {
    window.location.hash = "#/audit";
    const calls = serve([RETRY, REPLAY]);
    const user = userEvent.setup();
    render(<App feed={new SagaFeed()} />);
    const form = await screen.findByRole("search", { name: "Filter the record" });
    await user.type(within(form).getByLabelText(/Target/), " dl-0001 ");
    await user.click(within(form).getByRole("button", { name: "Filter" }));

    await waitFor(() => expect(rows()).toHaveLength(1));
    expect(rows()[0]).toHaveTextContent("dead letter dl-0001");
    expect(asked(calls).at(-1)).toEqual({ target: "dl-0001", limit: String(AUDIT_PAGE_SIZE + 1), offset: "0" });

    await user.clear(within(form).getByLabelText(/Target/));
    await user.type(within(form).getByLabelText(/Target/), "order-999");
    await user.click(within(form).getByRole("button", { name: "Filter" }));
    expect(await screen.findByText("No action on record for order-999.")).toBeInTheDocument();
    await user.click(within(form).getByRole("button", { name: "Show all" }));
    await waitFor(() => expect(rows()).toHaveLength(2));
  });

  it("reads its page from the address, a bad one as the first", () => {
    expect(offsetFrom(new URLSearchParams("offset=200"))).toBe(200);
    for (const bad of ["offset=-100", "offset=1.5", "offset=x", ""]) expect(offsetFrom(new URLSearchParams(bad))).toBe(0);
  });
});
