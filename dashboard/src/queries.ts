// Data from the admin API through one query cache: each view asks by key, the cache
// polls what changes without a saga changing, and a change on the live feed marks the
// saga views stale so they load again.
import { QueryClient, useQuery, useQueryClient } from "@tanstack/react-query";
import { useEffect } from "react";
import {
  api,
  type FeedMode,
  type SagaFeed,
  type SearchCriteria,
  type Window,
} from "./api";
import { PANEL_POLL_MS, POLL_MS } from "./session";

export function newQueryClient(): QueryClient {
  return new QueryClient({
    defaultOptions: {
      queries: {
        // The last good answer stays on screen while a later one fails.
        retry: 1,
        refetchOnWindowFocus: false,
        staleTime: 1000,
      },
    },
  });
}

/** Keys: "sagas" for the views a saga's change alters (reloaded soon after the feed
 * reports one); "figures" for the charts and counts over many sagas, and "system" for
 * what changes without a saga changing, both polled (a busy system would otherwise ask
 * for its figures again on every change). */
export const keys = {
  stats: ["sagas", "stats"] as const,
  search: (criteria: SearchCriteria, limit: number, offset: number) =>
    ["sagas", "search", criteria, limit, offset] as const,
  saga: (id: string) => ["sagas", "one", id] as const,
  timeline: (id: string) => ["sagas", "timeline", id] as const,
  attention: ["sagas", "attention"] as const,
  approvals: ["sagas", "approvals"] as const,
  outcomes: (window: Window) => ["figures", "outcomes", window] as const,
  latency: (window: Window) => ["figures", "latency", window] as const,
  failures: (window: Window) => ["figures", "failures", window] as const,
  definitions: ["figures", "definitions"] as const,
  definition: (name: string, version: number) => ["figures", "definition", name, version] as const,
  backlog: (window: Window) => ["system", "backlog", window] as const,
  deadLetters: ["system", "dead-letters"] as const,
  breakers: ["system", "breakers"] as const,
  outbox: ["system", "outbox"] as const,
  audit: (target: string, limit: number, offset: number) => ["system", "audit", target, limit, offset] as const,
};

/** Mark every saga view stale soon after the feed reports a change (at most once per
 * `quietMs`); while the feed is down, poll them instead. */
export function useFeedRefresh(feed: SagaFeed, mode: FeedMode, quietMs = 500): void {
  const client = useQueryClient();
  useEffect(() => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const unsubscribe = feed.onRow(() => {
      if (timer !== undefined) return;
      timer = setTimeout(() => {
        timer = undefined;
        void client.invalidateQueries({ queryKey: ["sagas"] });
      }, quietMs);
    });
    return () => {
      clearTimeout(timer);
      unsubscribe();
    };
  }, [feed, client, quietMs]);
  useEffect(() => {
    if (mode !== "polling") return undefined;
    const poll = setInterval(() => void client.invalidateQueries({ queryKey: ["sagas"] }), POLL_MS);
    return () => clearInterval(poll);
  }, [mode, client]);
}

/** A view of what changes without a saga changing (dead letters, breakers, lag). */
export function usePolled<T>(key: readonly unknown[], load: () => Promise<T>) {
  return useQuery({ queryKey: key, queryFn: load, refetchInterval: PANEL_POLL_MS });
}

export const useStats = () => useQuery({ queryKey: keys.stats, queryFn: api.stats });
export const useOutcomes = (window: Window) =>
  useQuery({ queryKey: keys.outcomes(window), queryFn: () => api.outcomes(window), refetchInterval: PANEL_POLL_MS });
export const useLatency = (window: Window) =>
  useQuery({ queryKey: keys.latency(window), queryFn: () => api.latency(window), refetchInterval: PANEL_POLL_MS });
export const useFailures = (window: Window) =>
  useQuery({ queryKey: keys.failures(window), queryFn: () => api.failures(window), refetchInterval: PANEL_POLL_MS });
export const useBacklog = (window: Window) => usePolled(keys.backlog(window), () => api.backlog(window));
