// Loading from the API and staying current: the two hooks every view uses.
import { useEffect, useState } from "react";
import { ApiError, type SagaFeed, type SagaRow } from "./api";

export interface Loaded<T> {
  data: T | undefined;
  error: ApiError | undefined;
  reload: () => void;
}

/** `load()` now, again whenever `deps` change or `reload()` is called, and every
 * `everyMs` if given. The last good data stays on screen while a later load fails. */
export function useResource<T>(
  load: () => Promise<T>,
  deps: readonly unknown[],
  everyMs?: number,
): Loaded<T> {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<ApiError>();
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let current = true;
    load().then(
      (loaded) => {
        if (!current) return;
        setData(loaded);
        setError(undefined);
      },
      (failed: unknown) => {
        if (current) setError(asApiError(failed));
      },
    );
    return () => {
      current = false;
    };
    // `load` is a fresh closure each render; `deps` say when it means something new.
  }, [...deps, tick]);
  useEffect(() => {
    if (!everyMs) return undefined;
    const timer = setInterval(() => setTick((n) => n + 1), everyMs);
    return () => clearInterval(timer);
  }, [everyMs]);
  return { data, error, reload: () => setTick((n) => n + 1) };
}

/** A number that goes up, at most once per `quietMs`, after the feed reports a change
 * that `wanted` picks: put it in a view's deps to reload on changes. */
export function useFeedTick(
  feed: SagaFeed,
  quietMs: number,
  wanted: (row: SagaRow) => boolean = () => true,
): number {
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const unsubscribe = feed.onRow((row) => {
      if (!wanted(row) || timer !== undefined) return;
      timer = setTimeout(() => {
        timer = undefined;
        setTick((n) => n + 1);
      }, quietMs);
    });
    return () => {
      clearTimeout(timer);
      unsubscribe();
    };
    // `wanted` is read once per subscription: a view that changes it is keyed anew.
  }, [feed, quietMs]);
  return tick;
}

export function asApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  return new ApiError(0, error instanceof Error ? error.message : String(error));
}
