// What every view may ask of the signed-in session: who it is, whether it may act,
// and where to say how an action went.
import { createContext } from "react";
import type { ApiError, Me } from "./api";

export interface Notice {
  kind: "done" | "error";
  text: string;
}

export interface Session {
  me: Me;
  canAct: boolean;
  notify: (notice: Notice) => void;
}

export const SessionContext = createContext<Session>({
  me: { name: "", role: "viewer" },
  canAct: false,
  notify: () => {},
});

/** How often the views ask the API again when the live stream is down (and, for the
 * panels whose changes the stream does not carry, always). */
export const POLL_MS = 3000;
export const PANEL_POLL_MS = 5000;

/** One sentence for an API error, saying what the status means for the person. */
export function describeError(error: ApiError): string {
  switch (error.status) {
    case 0:
      return error.message;
    case 401:
      return "Token missing or wrong (401).";
    case 403:
      return `Not allowed (403): this token may look but not act. ${error.message}`;
    case 404:
      return `Not found (404): ${error.message}`;
    case 422:
      return `Refused (422): ${error.message}`;
    default:
      return `The admin API failed (${error.status}): ${error.message}`;
  }
}

// ------------------------------------------------------------------ signing in

/** The token a printed address carries, taken out of the address bar at once: at the end
 * of the fragment (`#token=…`, or `#/sagas/<id>&token=…`), which no server and no access
 * log ever sees, or in the query (`?token=…`) from an older address. */
export function takeTokenFromAddress(): string | null {
  const url = new URL(window.location.href);
  let token: string | null = null;
  const inFragment = /(^#|&)token=([^&]*)$/.exec(url.hash);
  if (inFragment) {
    token = decodeURIComponentSafe(inFragment[2] ?? "");
    url.hash = url.hash.slice(0, inFragment.index).replace(/^#$/, "");
  }
  const inQuery = url.searchParams.get("token");
  if (inQuery !== null) {
    token = token ?? inQuery;
    url.searchParams.delete("token");
  }
  if (inFragment || inQuery !== null) {
    window.history.replaceState(window.history.state, "", url.pathname + url.search + url.hash);
  }
  return token || null;
}

function decodeURIComponentSafe(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text; // a broken escape is the token as written
  }
}

/** Exchange a token for a session: the admin API answers with an HttpOnly, SameSite=Strict
 * cookie that every later request (and the live stream) presents. The token itself is
 * kept nowhere: not in storage, not in the address. False when the API refused it. */
export async function signIn(token: string): Promise<boolean> {
  try {
    const response = await fetch("/api/session", {
      method: "POST",
      headers: { Accept: "application/json", Authorization: `Bearer ${token.trim()}` },
      credentials: "same-origin",
    });
    return response.ok;
  } catch {
    return false;
  }
}

/** On page load: a token in the address is exchanged for a session (an earlier session,
 * if the browser holds one, goes on otherwise). */
export async function startSession(): Promise<void> {
  const token = takeTokenFromAddress();
  if (token) await signIn(token);
}
