// Probing image servers at open, and the rule that decides which image they agree on.
import { SourceFault, type RangeTimeouts } from "./http";
import type { Source } from "./source";

/** What a server says about the image: size, validator (ETag or Last-Modified), mtime. */
export interface ImageIdentity { size: number; validator: string; lastModifiedMs?: number }
export type ProbeResult = { ok: true; image: ImageIdentity } | { ok: false; reason: string };

/**
 * A 1-byte range GET: tells size (Content-Range), validator and RTT, and that Range is honoured.
 * With `warm`, a second probe measures RTT on the now-open connection (for "latency" order).
 */
export async function probeSource(s: Source, t: RangeTimeouts, warm = false): Promise<ProbeResult> {
  try {
    let t0 = performance.now();
    let r = await s.fetcher.get(0, 1, t);
    if (warm) { t0 = performance.now(); r = await s.fetcher.get(0, 1, t); }
    s.noteRtt(performance.now() - t0);
    return { ok: true, image: { size: r.size, validator: r.validator, lastModifiedMs: r.lastModifiedMs } };
  } catch (e) {
    if (e instanceof SourceFault) return { ok: false, reason: e.reason };
    throw e;
  }
}

export const AGREEMENT_RULE = "the largest group of servers agreeing on size and validator wins; ties go to the first listed";

/**
 * Which image the servers agree on: results grouped by (size, validator); the largest group wins, a tie goes to the
 * group holding the earliest-listed server. Returns the winning indices (ascending), or undefined if none answered.
 */
export function chooseImage(results: ProbeResult[]): { image: ImageIdentity; members: number[] } | undefined {
  const groups = new Map<string, number[]>();
  results.forEach((r, i) => {
    if (!r.ok) return;
    const key = `${r.image.size}\n${r.image.validator}`;
    groups.set(key, [...(groups.get(key) ?? []), i]);
  });
  let best: number[] | undefined;
  for (const g of groups.values()) if (!best || g.length > best.length || (g.length === best.length && g[0] < best[0])) best = g;
  if (!best) return undefined;
  const first = results[best[0]];
  return first.ok ? { image: first.image, members: best } : undefined;
}
