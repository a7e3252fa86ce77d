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
