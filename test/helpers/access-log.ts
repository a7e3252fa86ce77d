// Reads what a test nginx served from its access log (nginx's default "combined" format): bytes fetched by clients as
// seen from the server side. Enable it with `extra: accessLogDirective(path)` in startNginx.
import { existsSync, readFileSync } from "node:fs";

/** Server-level directive: overrides the helper's http-level `access_log off` (written unbuffered, line by line). */
export const accessLogDirective = (path: string) => `access_log ${path} combined;`;

export interface Served { requests: number; status: Record<string, number>; bodyBytes: number }

/**
 * The matches of `re` (group 1: the request path) on the log's whole lines, for paths ending in `suffix`. The text
 * after the last newline is left out: empty, or a line nginx is still writing. Malformed lines are skipped.
 */
function logMatches(path: string, re: RegExp, suffix: string): RegExpMatchArray[] {
  if (!existsSync(path)) return [];
  const lines = readFileSync(path, "utf8").split("\n");
  lines.pop();
  return lines.map((l) => l.match(re)).filter((m): m is RegExpMatchArray => !!m && m[1].split("?")[0].endsWith(suffix));
}

/** Requests and response body bytes for paths ending in `suffix` (all paths when empty). Malformed lines are skipped. */
export function servedFromLog(path: string, suffix = ""): Served {
  const out: Served = { requests: 0, status: {}, bodyBytes: 0 };
  // combined: addr - user [time] "METHOD PATH PROTO" STATUS BYTES "referer" "agent"
  for (const m of logMatches(path, /^\S+ \S+ \S+ \[[^\]]+\] "[A-Z]+ (\S+) [^"]*" (\d{3}) (\d+|-) "[^"]*" "[^"]*"$/, suffix)) {
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
  const spans: [number, number][] = [];
  for (const m of logMatches(path, /^"[A-Z]+ (\S+) [^"]*" (\d{3}) (\d+) "(?:bytes=(\d+)-(\d*)|-)"$/, suffix)) {
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
