import { afterEach, describe, expect, it, vi } from "vitest";
import { api, ApiError, onUnauthorized, sagasPath } from "../src/api";
import { startSession, takeTokenFromAddress } from "../src/session";
import { clock, dateTime, elapsed } from "../src/format";
import { fakeApi, OPERATOR } from "./fakes";

afterEach(() => {
  window.history.replaceState(null, "", "/");
  vi.unstubAllGlobals();
});

describe("the token", () => {
  it("is taken from the address's fragment once and leaves the address bar", () => {
    window.history.replaceState(null, "", "/?view=1#/sagas/order-101&token=s3cret");

    expect(takeTokenFromAddress()).toBe("s3cret");

    expect(window.location.search).toBe("?view=1");
    expect(window.location.hash).toBe("#/sagas/order-101");
    expect(window.location.href).not.toContain("s3cret");
    expect(takeTokenFromAddress()).toBeNull();
    window.history.replaceState(null, "", "/#token=t%2Fwo");
    expect(takeTokenFromAddress()).toBe("t/wo");
    expect(window.location.href).not.toContain("t%2Fwo");
    window.history.replaceState(null, "", "/?token=older#/sagas/x");
    expect(takeTokenFromAddress()).toBe("older");
    expect(window.location.hash).toBe("#/sagas/x");
  });

  it("is exchanged once for a session; requests then carry no token and nothing keeps it", async () => {
    window.history.replaceState(null, "", "/#token=s3cret");
    const calls = fakeApi([
      ["POST", /^\/api\/session$/, () => OPERATOR],
      ["GET", /^\/api\/me$/, () => OPERATOR],
    ]);

    await startSession();
    expect(await api.me()).toEqual(OPERATOR);

    expect(calls).toEqual([
      { method: "POST", url: "/api/session", auth: "Bearer s3cret", body: undefined },
      { method: "GET", url: "/api/me", auth: null, body: undefined },
    ]);
    expect(JSON.stringify({ ...sessionStorage, ...localStorage })).not.toContain("s3cret");
    expect(window.location.href).not.toContain("s3cret");
  });

  it("a 401 tells the app, and the error carries the API's reason", async () => {
    const heard = vi.fn();
    onUnauthorized(heard);
    fakeApi([["GET", /^\/api\/me$/, () => ({ status: 401, body: { detail: "unknown token" } })]]);

    const failure = api.me();

    await expect(failure).rejects.toEqual(new ApiError(401, "unknown token"));
    expect(heard).toHaveBeenCalledOnce();
  });

  it("a 422 reads as the fields that were wrong", async () => {
    fakeApi([
      [
        "POST",
        /^\/api\/sagas\/s-1\/resolve$/,
        () => ({
          status: 422,
          body: { detail: [{ loc: ["body", "note"], msg: "Field required" }] },
        }),
      ],
    ]);

    await expect(api.act("s-1", "resolve", "")).rejects.toEqual(
      new ApiError(422, "note: Field required"),
    );
  });
});

describe("requests", () => {
  it("ask for sagas with only the filters that are set", () => {
    expect(sagasPath({ limit: 50, offset: 0 })).toBe("/api/sagas?limit=50&offset=0");
    expect(
      sagasPath({ status: "compensated", definition: "order", key: "order-7", since: 10, limit: 50, offset: 100 }),
    ).toBe("/api/sagas?status=compensated&definition=order&key=order-7&since=10&limit=50&offset=100");
  });

  it("send the note as the why, and no note when none was given", async () => {
    const calls = fakeApi([
      ["POST", /^\/api\/sagas\/order-1\/retry$/, () => ({ status: 202, body: { accepted: true, saga_id: "order-1" } })],
      ["POST", /^\/api\/dead-letters\/dl-1\/replay$/, () => ({ replayed: 1 })],
    ]);

    await api.act("order-1", "retry", "  card fixed ");
    await api.replay("dl-1", "");

    expect(calls.map((call) => call.body)).toEqual([{ note: "card fixed" }, {}]);
  });
});

describe("times", () => {
  it("read relative to the saga's start as in the issue's timeline", () => {
    expect([0, 450, 999, 1200, 1850, 59_990, 125_000, 3_725_000].map(elapsed)).toEqual([
      "0ms",
      "450ms",
      "999ms",
      "1.2s",
      "1.8s",
      "59.9s",
      "2m 05s",
      "1h 02m",
    ]);
  });

  it("show the time of day for today and the date before that", () => {
    const now = new Date(2026, 10, 26, 12, 0, 0);
    expect(clock(new Date(2026, 10, 26, 9, 5, 7).getTime() / 1000, now)).toBe("09:05:07");
    expect(clock(new Date(2026, 10, 24, 9, 5, 7).getTime() / 1000, now)).toBe("2026-11-24 09:05:07");
    expect(clock(null, now)).toBe("-");
  });

  it("show the date with the time where a record needs both, even today's", () => {
    expect(dateTime(new Date(2026, 10, 26, 9, 5, 7, 900).getTime() / 1000)).toBe("2026-11-26 09:05:07");
  });
});
