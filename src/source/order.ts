// Preference order of an image's sources: as listed, by measured latency, or spread over servers by rendezvous hashing.
import { createHash } from "node:crypto";

export type SourceOrder = "listed" | "latency" | "spread";

export const ORDERS: readonly SourceOrder[] = ["listed", "latency", "spread"];

/** Rendezvous (highest-random-weight) score: each node ranks servers differently, yet stably. */
export function rendezvousScore(nodeId: string, url: string): bigint {
  const h = createHash("sha256").update(nodeId).update("\0").update(url).digest();
  return h.readBigUInt64BE(0);
}

/** Returns source indices, most preferred first. `rttMs` undefined sorts last (never measured). */
export function rankSources(order: SourceOrder, items: { href: string; rttMs?: number }[], nodeId: string): number[] {
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
    const scores = items.map((it) => rendezvousScore(nodeId, it.href));
    return idx.sort((a, b) => (scores[a] === scores[b] ? a - b : scores[a] > scores[b] ? -1 : 1));
  }
  throw new Error(`unknown source order ${JSON.stringify(order)}: use ${ORDERS.join(", ")}`);
}
