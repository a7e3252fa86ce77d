// A real Prometheus text-format parser for the metrics tests: `promtool check metrics` (Debian's prometheus package).
import { existsSync } from "node:fs";

/** promtool check metrics on `text`: its exit status and what it said (nothing when the text parses and lints clean). */
export function promtool(text: string): { code: number; out: string } {
  if (!Bun.which("promtool") && !existsSync("/usr/bin/promtool")) {
    throw new Error("promtool is missing: install Debian's prometheus package (scripts/deps.sh does)");
  }
  const r = Bun.spawnSync(["promtool", "check", "metrics"], { stdin: new TextEncoder().encode(text), stdout: "pipe", stderr: "pipe", timeout: 30_000 });
  return { code: r.exitCode ?? -1, out: (r.stdout.toString() + r.stderr.toString()).trim() };
}

/** The value of one sample line `NAME{LABELS} VALUE` (labels as written, in order), or undefined. */
export function sampleValue(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}
