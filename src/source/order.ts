// Preference order of an image's sources: as listed, by measured latency, or spread over servers by weighted
// rendezvous (highest-random-weight) hashing on the node's identity.
import { createHash } from "node:crypto";

export type SourceOrder = "listed" | "latency" | "spread";

export const ORDERS: readonly SourceOrder[] = ["listed", "latency", "spread"];

/** Largest weight a source may have (weights are relative: 100 and 10 is the same as 10 and 1). */
export const MAX_WEIGHT = 1_000_000;

/** Rendezvous (highest-random-weight) hash: each node ranks servers differently, yet stably. 64 bits, big-endian. */
export function rendezvousScore(nodeId: string, url: string): bigint {
  const h = createHash("sha256").update(nodeId).update("\0").update(url).digest();
  return h.readBigUInt64BE(0);
}

/**
 * The weighted rendezvous score -weight / ln(u), u the hash's top 53 bits mapped into the open interval (0, 1): a
 * source with twice the weight is first for twice as many nodes, and removing a source changes nothing for the nodes
 * that did not have it first (each score depends on the node, that source and its weight alone). With equal weights
 * the order is that of the plain hash (but for hashes equal in their top 53 bits).
 */
export function weightedScore(nodeId: string, url: string, weight: number): number {
  const u = (Number(rendezvousScore(nodeId, url) >> 11n) + 0.5) / 2 ** 53;
  return -weight / Math.log(u);
}

export interface RankItem { href: string; rttMs?: number; weight?: number }

/**
 * Returns source indices, most preferred first. `rttMs` undefined sorts last (never measured).
 * `weight` (default 1) counts for "spread" only; weight 0 means last resort: such sources come after every source with
 * a weight, ranked among themselves by the plain hash (so with all weights 0 they still spread evenly).
 */
export function rankSources(order: SourceOrder, items: RankItem[], nodeId: string): number[] {
  const idx = items.map((_, i) => i);
  if (order === "listed") return idx;
  if (order === "latency") {
    // Compare on a coarse log scale (steps of ~41%) so jitter between similar servers does not flap the order.
    const bucket = (rtt?: number) => (rtt === undefined ? Infinity : Math.floor(2 * Math.log2(Math.max(rtt, 0.25) / 0.25)));
    return idx.sort((a, b) => {
      const ra = bucket(items[a].rttMs), rb = bucket(items[b].rttMs);
      return ra === rb ? a - b : ra - rb;
    });
  }
  if (order === "spread") {
    const w = items.map((it) => it.weight ?? 1);
    for (const x of w) checkWeight(x);
    const scores = items.map((it, i) => weightedScore(nodeId, it.href, w[i] > 0 ? w[i] : 1));
    const tier = (i: number) => (w[i] > 0 ? 0 : 1);
    return idx.sort((a, b) => tier(a) - tier(b) || (scores[a] === scores[b] ? a - b : scores[a] > scores[b] ? -1 : 1));
  }
  throw new Error(`unknown source order ${JSON.stringify(order)}: use ${ORDERS.join(", ")}`);
}

/** A source weight: a finite number from 0 (last resort) to MAX_WEIGHT. */
export function checkWeight(w: number, what = "weight"): number {
  if (typeof w !== "number" || !Number.isFinite(w) || w < 0 || w > MAX_WEIGHT) {
    throw new Error(`${what} ${JSON.stringify(w)} must be a number from 0 (last resort) to ${MAX_WEIGHT}`);
  }
  return w;
}

/** Parses a weight as typed ("10", "2.5", "0"); throws naming `what`. */
export function parseWeight(text: string, what = "weight"): number {
  if (!/^\d{1,7}(\.\d{1,6})?$/.test(text.trim())) {
    throw new Error(`${what} "${text}" is not a number from 0 (last resort) to ${MAX_WEIGHT}, e.g. 10 or 2.5`);
  }
  return checkWeight(Number(text), what);
}
