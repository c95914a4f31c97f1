// The page: who is signed in, the live feed, the notices, the views by address (a hash
// router: the admin API serves one file), and a boundary that keeps one broken view from
// blanking the page.
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { createContext, type FormEvent, lazy, Suspense, useContext, useEffect, useMemo, useState } from "react";
import { ErrorBoundary, type FallbackProps } from "react-error-boundary";
import {
  createHashRouter,
  Link,
  NavLink,
  Outlet,
  RouterProvider,
  useLocation,
  useRouteError,
} from "react-router";
import { api, type FeedMode, type Me, onUnauthorized, SagaFeed } from "./api";
import { AuditPage } from "./Audit";
import { asApiError } from "./hooks";
import { Overview } from "./Overview";
import { newQueryClient, useFeedRefresh } from "./queries";
import { SagaPage } from "./SagaDetail";
import { SearchPage } from "./SearchPage";
import { type Notice, SessionContext, signIn } from "./session";

type Phase =
  | { kind: "loading" }
  | { kind: "ready"; me: Me }
  | { kind: "unauthorized" }
  | { kind: "forbidden"; why: string }
  | { kind: "unreachable"; why: string };

const FEED_LABEL: Record<FeedMode, string> = {
  connecting: "connecting…",
  live: "live",
  polling: "stream lost: polling",
};

function Failed({ error, resetErrorBoundary }: FallbackProps) {
  const why = error instanceof Error ? error.message : String(error);
  return (
    <section className="panel wide" role="alert">
      <h2>This view failed</h2>
      <p>{why}</p>
      <p>
        <Link to="/" onClick={resetErrorBoundary}>
          Back to the overview
        </Link>
      </p>
    </section>
  );
}

/** An address the router cannot read (a broken escape, say) ends here, not in a blank page. */
function RouteFailed() {
  const error = useRouteError();
  return (
    <main className="screen" role="alert">
      <h1>This address cannot be shown</h1>
      <p>{error instanceof Error ? error.message : "The view failed."}</p>
      <p>
        <a href="#/">Back to the overview</a>
      </p>
    </main>
  );
}

function NotFound() {
  return (
    <section className="panel wide">
      <h2>Nothing here</h2>
      <p>
        <Link to="/">Back to the overview</Link>
      </p>
    </section>
  );
}

function Shell({ feed, me, notice, dismiss }: ShellProps) {
  const [mode, setMode] = useState<FeedMode>(feed.mode);
  const location = useLocation();
  useEffect(() => {
    const unsubscribe = feed.onMode(setMode);
    feed.start();
    return () => {
      unsubscribe();
      feed.stop();
    };
  }, [feed]);
  useFeedRefresh(feed, mode);
  return (
    <>
      <header className="top">
        <h1>
          <Link to="/">sagakit</Link>
        </h1>
        <nav aria-label="Views">
          <NavLink to="/" end>
            Overview
          </NavLink>
          <NavLink to="/sagas">Sagas</NavLink>
          <NavLink to="/definitions">Definitions</NavLink>
          <NavLink to="/audit">Audit</NavLink>
        </nav>
        <span className={`feed feed-${mode}`} title="saga changes from /api/stream">
          {FEED_LABEL[mode]}
        </span>
        <span className="who">
          {me.name} <span className={`role role-${me.role}`}>{me.role}</span>
        </span>
      </header>
      <div className={`notice ${notice?.kind ?? ""}`} role="status" aria-live="polite">
        {notice && (
          <>
            {notice.text}{" "}
            <button type="button" className="dismiss" onClick={dismiss}>
              Dismiss
            </button>
          </>
        )}
      </div>
      <main>
        <ErrorBoundary FallbackComponent={Failed} resetKeys={[location.pathname, location.search]}>
          <Suspense fallback={<p>Loading…</p>}>
            <Outlet />
          </Suspense>
        </ErrorBoundary>
      </main>
    </>
  );
}

interface ShellProps {
  feed: SagaFeed;
  me: Me;
  notice: Notice | null;
  dismiss: () => void;
}

// The router is made once; what its shell shows (the notice, say) comes through here.
const ShellContext = createContext<ShellProps | null>(null);

function ShellSlot() {
  const props = useContext(ShellContext);
  return props && <Shell {...props} />;
}

// The graph renderer is needed on the definitions' pages only: it loads with them.
const DefinitionPage = lazy(() => import("./Definitions").then((m) => ({ default: m.DefinitionPage })));
const DefinitionsPage = lazy(() => import("./Definitions").then((m) => ({ default: m.DefinitionsPage })));

const ROUTES = [
  {
    path: "/",
    element: <ShellSlot />,
    errorElement: <RouteFailed />,
    children: [
      { index: true, element: <Overview /> },
      { path: "sagas", element: <SearchPage /> },
      { path: "sagas/:sagaId", element: <SagaPage /> },
      { path: "definitions", element: <DefinitionsPage /> },
      { path: "definitions/:name/:version", element: <DefinitionPage /> },
      { path: "audit", element: <AuditPage /> },
      { path: "*", element: <NotFound /> },
    ],
  },
];

function Routed({ feed, me, notice, notify }: { feed: SagaFeed; me: Me; notice: Notice | null; notify: (n: Notice | null) => void }) {
  const router = useMemo(() => createHashRouter(ROUTES), []);
  const shell = useMemo(() => ({ feed, me, notice, dismiss: () => notify(null) }), [feed, me, notice, notify]);
  return (
    <ShellContext.Provider value={shell}>
      <RouterProvider router={router} />
    </ShellContext.Provider>
  );
}

export function App({ feed: given, client: givenClient }: { feed?: SagaFeed; client?: QueryClient }) {
  const feed = useMemo(() => given ?? new SagaFeed(), [given]);
  const client = useMemo(() => givenClient ?? newQueryClient(), [givenClient]);
  const [phase, setPhase] = useState<Phase>({ kind: "loading" });
  const [attempt, setAttempt] = useState(0);
  const [notice, setNotice] = useState<Notice | null>(null);

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

  const session = useMemo(
    () => (phase.kind === "ready" ? { me: phase.me, canAct: phase.me.role === "operator", notify: setNotice } : null),
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
    <QueryClientProvider client={client}>
      <SessionContext.Provider value={session}>
        <Routed feed={feed} me={session.me} notify={setNotice} notice={notice} />
      </SessionContext.Provider>
    </QueryClientProvider>
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
          <input type="password" autoComplete="off" value={token} onChange={(event) => setToken(event.target.value)} />
        </label>
        <button type="submit">Use this token</button>
      </form>
    </main>
  );
}
