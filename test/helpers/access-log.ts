// Reads what a test nginx served from its access log (nginx's default "combined" format): bytes fetched by clients as
// seen from the server side. Enable it with `extra: accessLogDirective(path)` in startNginx.
import { existsSync, readFileSync } from "node:fs";

/** Server-level directive: overrides the helper's http-level `access_log off` (written unbuffered, line by line). */
export const accessLogDirective = (path: string) => `access_log ${path} combined;`;

export interface Served { requests: number; status: Record<string, number>; bodyBytes: number }

/** Requests and response body bytes for paths ending in `suffix` (all paths when empty). Malformed lines are skipped. */
export function servedFromLog(path: string, suffix = ""): Served {
  const out: Served = { requests: 0, status: {}, bodyBytes: 0 };
  if (!existsSync(path)) return out;
  // combined: addr - user [time] "METHOD PATH PROTO" STATUS BYTES "referer" "agent"; whole lines only.
  const re = /^\S+ \S+ \S+ \[[^\]]+\] "[A-Z]+ (\S+) [^"]*" (\d{3}) (\d+|-) "[^"]*" "[^"]*"$/;
  const lines = readFileSync(path, "utf8").split("\n");
  lines.pop(); // after the last newline: empty, or a line nginx is still writing
  for (const line of lines) {
    const m = line.match(re);
    if (!m || !m[1].split("?")[0].endsWith(suffix)) continue;
    out.requests++;
    out.status[m[2]] = (out.status[m[2]] ?? 0) + 1;
    if (m[3] !== "-") out.bodyBytes += Number(m[3]);
  }
  return out;
}

/**
 * A log format (http {} context, e.g. in startNginxSite's siteConfig) that also records the Range asked for, so
 * servedRanges can tell distinct bytes from bytes fetched again.
 */
export const RANGE_LOG_FORMAT = `log_format airroot_ranges '"$request" $status $body_bytes_sent "$http_range"';`;

export interface ServedRanges { requests: number; bodyBytes: number; distinctBytes: number }

/** From a RANGE_LOG_FORMAT log: requests, body bytes, and distinct file bytes sent (200s and single-range 206s). */
export function servedRanges(path: string, suffix = ""): ServedRanges {
  const out: ServedRanges = { requests: 0, bodyBytes: 0, distinctBytes: 0 };
  if (!existsSync(path)) return out;
  const re = /^"[A-Z]+ (\S+) [^"]*" (\d{3}) (\d+) "(?:bytes=(\d+)-(\d*)|-)"$/;
  const spans: [number, number][] = [];
  const lines = readFileSync(path, "utf8").split("\n");
  lines.pop(); // after the last newline: empty, or a line nginx is still writing
  for (const line of lines) {
    const m = line.match(re);
    if (!m || !m[1].split("?")[0].endsWith(suffix)) continue;
    out.requests++;
    const sent = Number(m[3]);
    out.bodyBytes += sent;
    // What was sent starts at the range start (206) or at 0 (200) and is as long as the body actually sent.
    if (m[2] === "206" && m[4] !== undefined) spans.push([Number(m[4]), Number(m[4]) + sent]);
    else if (m[2] === "200") spans.push([0, sent]);
  }
  spans.sort((a, b) => a[0] - b[0]);
  let end = -1;
  for (const [s, e] of spans) {
    if (e <= end) continue;
    out.distinctBytes += e - Math.max(s, end); // spans are sorted by start: only the part past `end` is new
    end = e;
  }
  return out;
}
