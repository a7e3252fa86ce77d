// Which servers a node reads its root image from, in what order and with what weights: this server, its mirrors and
// its peers, the order the config names (mirror-order) and each source's weight (mirror-weights).
import { ORDERS, parseWeight, type SourceOrder } from "../source/order.ts";
import { parseBaseUrl } from "./urls.ts";

export const DEFAULT_MIRROR_ORDER: SourceOrder = "spread";

export interface ImageSourcePlan {
  /** Base URLs holding the images: this server's first, then mirrors, then peers. */
  bases: string[];
  /** One weight per base (same order) for order "spread"; 0 = last resort. */
  weights: number[];
  order: SourceOrder;
}

export interface WeightEntry { url: string; weight: number }

/** One mirror-weights item, "https://HOST[:PORT][/PATH]=WEIGHT", normalised; throws saying what is wrong. */
export function parseWeightEntry(text: string, what = "mirror-weights:"): WeightEntry {
  const t = text.trim(), eq = t.lastIndexOf("=");
  if (eq <= 0) throw new Error(`${what} "${text}" must be URL=WEIGHT, e.g. https://mirror1.example=10`);
  const url = parseBaseUrl(t.slice(0, eq), what);
  return { url, weight: parseWeight(t.slice(eq + 1), `${what} ${url}:`) };
}

export const formatWeightEntry = (e: WeightEntry) => `${e.url}=${e.weight}`;

export function parseOrder(v: string, key: string): SourceOrder {
  const t = v.trim().toLowerCase();
  if (!(ORDERS as readonly string[]).includes(t)) throw new Error(`${key}: "${v}" is not one of ${ORDERS.join(", ")}`);
  return t as SourceOrder;
}

export interface PlanConfig { mirrors: string[]; peers: string[]; mirrorOrder: SourceOrder; mirrorWeights: string[] }

/**
 * The image sources nodes are told. Weights: what mirror-weights names, else 1 for a mirror; this server and its
 * peers weigh 0 (last resort) as long as some mirror has a weight, else 1 (with no mirror they share the nodes).
 * Why the deployment servers stand back: every booting node needs them for enrollment, its config and host
 * certificates, and they are the site's single point of failure for those (a mirror is stock nginx that only serves
 * files). A storm that also pulls the image from them slows every node's API calls, and when a mirror dies its share
 * would land on them in part. Mirrors are there to carry the image; the servers still serve it when every mirror is
 * down. An operator who wants a server to take a share gives its URL a weight (`config add mirror-weights URL=W`).
 */
export function imageSourcePlan(own: string[], c: PlanConfig): ImageSourcePlan {
  const bases = [...new Set([...own, ...c.mirrors, ...c.peers])];
  const given = new Map<string, number>();
  for (const e of c.mirrorWeights) {
    try { const w = parseWeightEntry(e); given.set(w.url, w.weight); } catch { /* readConfig refuses such a file; never fail a node's config */ }
  }
  const mirrorWeight = (m: string) => given.get(m) ?? 1;
  const serverDefault = c.mirrors.some((m) => mirrorWeight(m) > 0) ? 0 : 1;
  const weights = bases.map((b) => (c.mirrors.includes(b) ? mirrorWeight(b) : given.get(b) ?? serverDefault));
  return { bases, weights, order: c.mirrorOrder };
}
