// Judges what `airroot status --json` printed (parsed JSON, so any shape at all) against what the selftest knows
// to be true; returns the problems in words and never throws on odd input.
import type { DaemonStatus } from "../mount/status";

export interface ExpectedStatus {
  mountpoint: string;
  pid: number;
  imageName: string;
  imageSize: number;
  urls: string[];
  /** Bytes the caller has read through the mount at least once: the daemon must have fetched that much. */
  minBytesFetched: number;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** Problems found in a status reply (empty when it is sane). A reply that passes is a well-formed DaemonStatus. */
export function statusProblems(st: unknown, want: ExpectedStatus): string[] {
  if (!isObj(st)) return [`not a JSON object (${st === null ? "null" : Array.isArray(st) ? "array" : typeof st})`];
  if (!isObj(st.image)) return ["no \"image\" object"];
  const img = st.image;
  const problems: string[] = [];
  if (st.mountpoint !== want.mountpoint) problems.push(`mountpoint ${JSON.stringify(st.mountpoint)}, expected ${want.mountpoint}`);
  if (st.pid !== want.pid) problems.push(`pid ${JSON.stringify(st.pid)}, but \`airroot mount\` reported ${want.pid}`);
  if (img.name !== want.imageName) problems.push(`image name ${JSON.stringify(img.name)}, expected ${want.imageName}`);
  if (img.size !== want.imageSize) problems.push(`image size ${JSON.stringify(img.size)}, expected ${want.imageSize}`);
  if (!Array.isArray(img.sources) || !img.sources.every(isObj)) {
    problems.push("\"image.sources\" is not a list of objects");
  } else {
    const sources = img.sources as Record<string, unknown>[];
    const got = sources.map((s) => String(s.url)).sort();
    const expected = [...want.urls].sort();
    if (JSON.stringify(got) !== JSON.stringify(expected)) problems.push(`sources ${got.join(",")}, expected ${expected.join(",")}`);
    const unhealthy = sources.filter((s) => s.state !== "healthy");
    if (unhealthy.length) problems.push(`not healthy: ${unhealthy.map((s) => `${String(s.url)} ${String(s.state)} (${String(s.reason ?? "")})`).join(", ")}`);
  }
  if (typeof img.bytesFetched !== "number" || !(img.bytesFetched >= want.minBytesFetched)) {
    problems.push(`${JSON.stringify(img.bytesFetched)} bytes fetched, expected at least the ${want.minBytesFetched} read through the mount`);
  }
  if (typeof img.readsTotal !== "number" || !(img.readsTotal > 0)) problems.push("no reads counted");
  return problems;
}

/** statusProblems as an assertion: returns the reply typed, or throws naming every problem. */
export function assertSaneStatus(st: unknown, want: ExpectedStatus): DaemonStatus {
  const problems = statusProblems(st, want);
  if (problems.length) throw new Error(`\`airroot status --json\`: ${problems.join("; ").slice(0, 800)}`);
  return st as DaemonStatus;
}
