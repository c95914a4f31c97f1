// The page: who is signed in, the live feed, the notices, and which view is shown.
import { type FormEvent, useEffect, useMemo, useState } from "react";
import { api, type FeedMode, type Me, onUnauthorized, SagaFeed } from "./api";
import { asApiError } from "./hooks";
import {
  ApprovalsPanel,
  BreakersPanel,
  DeadLettersPanel,
  NeedsAttentionPanel,
  OutboxPanel,
  StatsPanel,
} from "./Panels";
import { SagaDetailView } from "./SagaDetail";
import { SagaList } from "./SagaList";
import { type Notice, SessionContext, signIn } from "./session";

type Phase =
  | { kind: "loading" }
  | { kind: "ready"; me: Me }
  | { kind: "unauthorized" }
  | { kind: "forbidden"; why: string }
  | { kind: "unreachable"; why: string };

/** `#/sagas/<id>` shows one saga; anything else the overview. */
function useRoute(): string | null {
  const read = () => {
    const found = /^#\/sagas\/(.+)$/.exec(window.location.hash);
    return found?.[1] ? decodeURIComponent(found[1]) : null;
  };
  const [sagaId, setSagaId] = useState(read);
  useEffect(() => {
    const update = () => setSagaId(read());
    window.addEventListener("hashchange", update);
    return () => window.removeEventListener("hashchange", update);
  }, []);
  return sagaId;
}

const FEED_LABEL: Record<FeedMode, string> = {
  connecting: "connecting…",
  live: "live",
  polling: "stream lost: polling",
};

export function App({ feed: given }: { feed?: SagaFeed }) {
  const feed = useMemo(() => given ?? new SagaFeed(), [given]);
  const [phase, setPhase] = useState<Phase>({ kind: "loading" });
  const [attempt, setAttempt] = useState(0);
  const [mode, setMode] = useState<FeedMode>(feed.mode);
  const [notice, setNotice] = useState<Notice | null>(null);
  const sagaId = useRoute();

  useEffect(() => {
    onUnauthorized(() => setPhase({ kind: "unauthorized" }));
    api.me().then(
      (me) => setPhase({ kind: "ready", me }),
      (failed: unknown) => {
        const error = asApiError(failed);
        if (error.status === 401) setPhase({ kind: "unauthorized" });
        else if (error.status === 403) setPhase({ kind: "forbidden", why: error.message });
        else setPhase({ kind: "unreachable", why: error.message });
      },
    );
  }, [attempt]);

  const ready = phase.kind === "ready";
  useEffect(() => {
    if (!ready) return undefined;
    const unsubscribe = feed.onMode(setMode);
    feed.start();
    return () => {
      unsubscribe();
      feed.stop();
    };
  }, [ready, feed]);

  const session = useMemo(
    () =>
      phase.kind === "ready"
        ? { me: phase.me, canAct: phase.me.role === "operator", notify: setNotice }
        : null,
    [phase],
  );

  if (phase.kind === "unauthorized") {
    return <TokenScreen onToken={() => setAttempt((n) => n + 1)} />;
  }
  if (phase.kind === "forbidden") {
    return (
      <main className="screen">
        <h1>Not allowed</h1>
        <p>The admin API refused this token (403): {phase.why}</p>
      </main>
    );
  }
  if (phase.kind === "unreachable") {
    return (
      <main className="screen">
        <h1>The admin API does not answer</h1>
        <p>{phase.why}</p>
        <button type="button" onClick={() => setAttempt((n) => n + 1)}>
          Try again
        </button>
      </main>
    );
  }
  if (session === null) return <main className="screen">Loading…</main>;

  return (
    <SessionContext.Provider value={session}>
      <header className="top">
        <h1>
          <a href="#/">sagakit</a>
        </h1>
        <span className={`feed feed-${mode}`} title="saga changes from /api/stream">
          {FEED_LABEL[mode]}
        </span>
        <span className="who">
          {session.me.name} <span className={`role role-${session.me.role}`}>{session.me.role}</span>
        </span>
      </header>
      <div className={`notice ${notice?.kind ?? ""}`} role="status" aria-live="polite">
        {notice && (
          <>
            {notice.text}{" "}
            <button type="button" className="dismiss" onClick={() => setNotice(null)}>
              Dismiss
            </button>
          </>
        )}
      </div>
      <main>
        {sagaId !== null ? (
          <SagaDetailView key={sagaId} id={sagaId} feed={feed} mode={mode} />
        ) : (
          <>
            <StatsPanel feed={feed} />
            <div className="columns">
              <NeedsAttentionPanel feed={feed} />
              <ApprovalsPanel feed={feed} />
            </div>
            <SagaList feed={feed} mode={mode} />
            <DeadLettersPanel feed={feed} />
            <div className="columns">
              <BreakersPanel feed={feed} />
              <OutboxPanel feed={feed} />
            </div>
          </>
        )}
      </main>
    </SessionContext.Provider>
  );
}

function TokenScreen({ onToken }: { onToken: () => void }) {
  const [token, setToken] = useState("");
  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    if (!token.trim()) return;
    void signIn(token).then(() => {
      setToken("");
      onToken();
    });
  }
  return (
    <main className="screen">
      <h1>Token missing or wrong</h1>
      <p>
        The admin API answered 401: this page has no token, or the admin API does not know it.
        Open the address that <code>sagakit demo --serve</code> or <code>sagakit up</code> printed
        with <code>--show-tokens</code> (it ends in <code>#token=…</code>), or paste a token
        here: it is exchanged for a session and not kept in this page.
      </p>
      <form onSubmit={submit}>
        <label>
          Token
          <input
            type="password"
            autoComplete="off"
            value={token}
            onChange={(event) => setToken(event.target.value)}
          />
        </label>
        <button type="submit">Use this token</button>
      </form>
    </main>
  );
}
