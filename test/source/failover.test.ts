// Which server a request goes to (ServerSet.pick / preferred): a weight-0 source (the deployment server and its peers
// beside weighted mirrors) is last resort: used only while no weighted source is usable, so a mirror that is merely
// degraded (answers again after e.g. a connect timeout under a boot storm) still comes before it, while a mirror that
// is down falls through to it at once. Without weights, or with every weight 0, the order is healthy then degraded.
import { expect, test } from "bun:test";
import { ServerSet } from "../../src/source/failover";
import type { SourceOrder } from "../../src/source/order";
import { Source, type SourceState } from "../../src/source/source";
import { parseImageUrl } from "../../src/source/url";
import { imageSourcePlan } from "../../src/server/imagesources";
import { memoryLogger } from "../../src/util/log";

const IMG = `/images/${"ab".repeat(32)}.sfs`;
const SERVER = `https://deploy.example${IMG}`;
const MIRRORS = [1, 2, 3].map((i) => `https://m${i}.example${IMG}`);

function set(urls: string[], states: SourceState[], order: SourceOrder, weights: number[] | undefined, nodeId = "n0001") {
  const fetcher = { get: () => Promise.reject(new Error("not used")), destroy: async () => {} };
  const sources = urls.map((u, i) => {
    const s = new Source(parseImageUrl(u), fetcher, i);
    s.state = states[i];
    return s;
  });
  const servers = new ServerSet(sources, { size: 1 << 20, validator: '"v"' }, {
    order, nodeId, weights, timeouts: { stallMs: 1000, requestMs: 1000 }, probeIntervalMs: 60_000, holdDownMs: 30_000,
    ioTimeoutMs: 0, sizeOnly: false, log: memoryLogger(), onRecovered() {},
  });
  return { servers, sources, href: (s?: Source) => s?.href };
}

/** Every server pick() hands out in turn for one request (each tried once), as failover walks them. */
function walk(servers: ServerSet, tryDown: boolean): string[] {
  const tried = new Set<Source>(), out: string[] = [];
  for (let s = servers.pick(tried, tryDown); s; s = servers.pick(tried, tryDown)) { tried.add(s); out.push(s.href); }
  return out;
}

const urls = [SERVER, ...MIRRORS];           // as imageSourcePlan lists them: own URL first, then the mirrors
const weights = [0, 1, 1, 1];

test("a degraded weighted mirror is preferred over a healthy weight-0 server, for every node", () => {
  for (let n = 1; n <= 64; n++) {
    const node = `n${String(n).padStart(4, "0")}`;
    const { servers } = set(urls, ["healthy", "degraded", "degraded", "degraded"], "spread", weights, node);
    const order = walk(servers, true);
    expect(order).toHaveLength(4);
    expect(order.slice(0, 3).sort()).toEqual([...MIRRORS].sort()); // every degraded mirror before the server
    expect(order[3]).toBe(SERVER);
    expect(servers.preferred()?.href).toBe(order[0]);
    expect(MIRRORS).toContain(servers.pick(new Set(), false)!.href); // readahead too
  }
  // A healthy mirror still comes before a degraded one; the server stays last.
  const { servers, sources } = set(urls, ["healthy", "degraded", "healthy", "degraded"], "spread", weights);
  const order = walk(servers, false);
  expect(order[0]).toBe(MIRRORS[1]);
  expect(order[3]).toBe(SERVER);
  expect(servers.isLastResort(sources[0])).toBe(true);
  expect(sources.slice(1).some((s) => servers.isLastResort(s))).toBe(false);
});

test("every weighted mirror down (failing or probing): the weight-0 server is used at once", () => {
  for (const down of [["down", "down", "down"], ["probing", "down", "probing"]] as SourceState[][]) {
    const { servers } = set(urls, ["healthy", ...down], "spread", weights);
    expect(servers.pick(new Set(), false)?.href).toBe(SERVER);  // readahead: no waiting on a down mirror
    expect(servers.pick(new Set(), true)?.href).toBe(SERVER);   // demand: the server before any down mirror
    expect(servers.preferred()?.href).toBe(SERVER);
    const order = walk(servers, true);
    expect(order[0]).toBe(SERVER);
    expect(order.slice(1).sort()).toEqual([...MIRRORS].sort()); // then, demand only, the down mirrors
    expect(walk(servers, false)).toEqual([SERVER]);
  }
  // One mirror still usable (even degraded) keeps the server out; a degraded server is still used before down mirrors.
  expect(set(urls, ["healthy", "down", "degraded", "down"], "spread", weights).servers.pick(new Set(), true)?.href).toBe(MIRRORS[1]);
  expect(walk(set(urls, ["degraded", "down", "down", "down"], "spread", weights).servers, true)[0]).toBe(SERVER);
  // Nothing usable: readahead gets nothing, demand walks the down ones, weighted first.
  const { servers } = set(urls, ["down", "down", "down", "down"], "spread", weights);
  expect(servers.pick(new Set(), false)).toBeUndefined();
  expect(servers.preferred()).toBeUndefined();
  expect(walk(servers, true)[3]).toBe(SERVER);
});

test("no weights (no mirror: the servers weigh 1), all weights 0, or listed/latency order: healthy before degraded as before", () => {
  // How the deployment server describes "no mirrors": its own URL and its peers, each weight 1 (imageSourcePlan).
  const plan = imageSourcePlan(["https://deploy.example"], { mirrors: [], peers: ["https://peer.example"], mirrorOrder: "spread", mirrorWeights: [] });
  expect(plan.weights).toEqual([1, 1]);
  const both = [SERVER, `https://peer.example${IMG}`];
  for (const w of [plan.weights, undefined, [0, 0]]) {
    for (const states of [["healthy", "degraded"], ["degraded", "healthy"]] as SourceState[][]) {
      const { servers, sources } = set(both, states, "spread", w);
      const healthy = sources[states.indexOf("healthy")].href, degraded = sources[states.indexOf("degraded")].href;
      expect(walk(servers, true)).toEqual([healthy, degraded]);
      expect(servers.preferred()?.href).toBe(healthy);
      expect(sources.some((s) => servers.isLastResort(s))).toBe(false);
    }
  }
  // Weights count for "spread" only: listed and latency keep healthy (even weight 0) before degraded, in their order.
  for (const order of ["listed", "latency"] as const) {
    const { servers, sources } = set(urls, ["healthy", "degraded", "degraded", "healthy"], order, weights);
    expect(walk(servers, true)).toEqual([SERVER, MIRRORS[2], MIRRORS[0], MIRRORS[1]]);
    expect(sources.some((s) => servers.isLastResort(s))).toBe(false);
  }
});
