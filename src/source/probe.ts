// Probing image servers at open, and the rule that decides which image they agree on.
import { SourceFault, type RangeTimeouts } from "./http";
import { NO_VALIDATOR } from "./headers";
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

export const AGREEMENT_RULE = "the largest group of servers agreeing on size and validator wins (a server sending no " +
  "validator, usable only with a signed manifest, agrees with every server of its size); ties go to the first listed";

/**
 * Which image the servers agree on: results grouped by (size, validator); the largest group wins, a tie goes to the
 * group whose first server is listed earliest. A server without a validator (NO_VALIDATOR: RemoteImage.open admits
 * one only when a signed manifest verifies every chunk) has nothing to compare but its size: it joins every group of
 * that size, and servers of a size no validator-sending server has form a group of their own. Returns the winning
 * indices (ascending), or undefined if none answered.
 */
export function chooseImage(results: ProbeResult[]): { image: ImageIdentity; members: number[] } | undefined {
  const groups = new Map<string, number[]>();
  const sizeOnly = new Map<number, number[]>();
  results.forEach((r, i) => {
    if (!r.ok) return;
    if (r.image.validator === NO_VALIDATOR) { sizeOnly.set(r.image.size, [...(sizeOnly.get(r.image.size) ?? []), i]); return; }
    const key = `${r.image.size}\n${r.image.validator}`;
    groups.set(key, [...(groups.get(key) ?? []), i]);
  });
  const candidates: { lead: number; members: number[] }[] = [];
  const sizesWithValidator = new Set<number>();
  for (const g of groups.values()) {
    const size = (results[g[0]] as { image: ImageIdentity }).image.size;
    sizesWithValidator.add(size);
    candidates.push({ lead: g[0], members: [...g, ...(sizeOnly.get(size) ?? [])].sort((a, b) => a - b) });
  }
  for (const [size, g] of sizeOnly) if (!sizesWithValidator.has(size)) candidates.push({ lead: g[0], members: g });
  let best: { lead: number; members: number[] } | undefined;
  for (const c of candidates) {
    if (!best || c.members.length > best.members.length || (c.members.length === best.members.length && c.lead < best.lead)) best = c;
  }
  if (!best) return undefined;
  const first = results[best.lead];
  return first.ok ? { image: first.image, members: best.members } : undefined;
}
