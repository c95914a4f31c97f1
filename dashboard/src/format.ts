// How times and ids read on screen.

/** Time since the saga's start, as in the timeline: 0ms, 450ms, 1.2s, 2m 05s. */
export function elapsed(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  if (ms < 60_000) return `${(Math.floor(ms / 100) / 10).toFixed(1)}s`;
  const seconds = Math.floor(ms / 1000);
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${pad(seconds % 60)}s`;
  return `${Math.floor(seconds / 3600)}h ${pad(Math.floor(seconds / 60) % 60)}m`;
}

/** An epoch-seconds moment in local time: the time of day today, the date otherwise. */
export function clock(epochSeconds: number | null, now: Date = new Date()): string {
  if (epochSeconds === null) return "-";
  const at = new Date(epochSeconds * 1000);
  return at.toDateString() === now.toDateString() ? timeOfDay(at) : dateTime(epochSeconds);
}

/** An epoch-seconds moment in local time, always with its date: 2026-12-07 15:58:49. */
export function dateTime(epochSeconds: number): string {
  const at = new Date(epochSeconds * 1000);
  return `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())} ${timeOfDay(at)}`;
}

function timeOfDay(at: Date): string {
  return `${pad(at.getHours())}:${pad(at.getMinutes())}:${pad(at.getSeconds())}`;
}

/** A lag or a duration in seconds, to a tenth below a minute. */
export function seconds(value: number): string {
  return value < 60 ? `${value.toFixed(1)} s` : elapsed(value * 1000);
}

/** An interval's length in words: 30 s, 1 min, 30 min, 1 h. */
export function interval(seconds: number): string {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${seconds / 60} min`;
  return `${seconds / 3600} h`;
}

/** Saga ids are long; twelve characters are enough to tell them apart on screen. */
export function shortId(id: string): string {
  return id.length > 12 ? `${id.slice(0, 12)}…` : id;
}

export function statusLabel(status: string): string {
  return status.replace(/_/g, " ");
}

function pad(n: number): string {
  return String(n).padStart(2, "0");
}
