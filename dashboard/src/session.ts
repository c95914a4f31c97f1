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
