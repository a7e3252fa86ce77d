import { expect, test } from "bun:test";
import { BlockCache } from "../../src/source/cache";
import { Readahead } from "../../src/source/readahead";
import { rankSources } from "../../src/source/order";

test("BlockCache: LRU eviction by bytes", () => {
  const c = new BlockCache(300);
  c.set(1, new Uint8Array(100)); c.set(2, new Uint8Array(100)); c.set(3, new Uint8Array(100));
  expect(c.bytes).toBe(300);
  c.get(1);                       // 1 is now most recent
  c.set(4, new Uint8Array(100));  // evicts 2
  expect([c.has(1), c.has(2), c.has(3), c.has(4)]).toEqual([true, false, true, true]);
  c.set(5, new Uint8Array(1000)); // larger than the cache: ignored
  expect(c.has(5)).toBe(false);
  expect(c.bytes).toBe(300);
  c.set(3, new Uint8Array(50));   // replace accounts bytes
  expect(c.bytes).toBe(250);
  expect(() => new BlockCache(-1)).toThrow();
});

test("Readahead: window grows on sequential reads, none on random, streams tracked apart", () => {
  const K = 1024;
  const ra = new Readahead({ maxBytes: 1024 * K, initialBytes: 128 * K });
  expect(ra.observe(0, 128 * K)).toBeNull();                       // first read: unknown yet
  expect(ra.observe(128 * K, 128 * K)).toEqual({ start: 256 * K, end: 384 * K });
  expect(ra.observe(256 * K, 128 * K)).toEqual({ start: 384 * K, end: 640 * K });
  const r4 = ra.observe(384 * K, 128 * K)!;
  expect(r4.end - 512 * K).toBe(512 * K);                          // doubled again
  let last = r4;
  for (let i = 4; i < 20; i++) last = ra.observe(i * 128 * K, 128 * K) ?? last;
  expect(last.end - 20 * 128 * K).toBeLessThanOrEqual(1024 * K);  // capped
  expect(ra.observe(900 * 1024 * K, 4 * K)).toBeNull();            // random access: no readahead
  expect(ra.observe(5000 * 1024 * K, 4 * K)).toBeNull();
  // The sequential stream is still known and continues.
  const more = Array.from({ length: 8 }, (_, i) => ra.observe((20 + i) * 128 * K, 128 * K));
  expect(more.some((r) => r !== null)).toBe(true);
  // Top-ups come in batches of at least half a window, not one small range per read.
  for (const r of more) if (r) expect(r.end - r.start).toBeGreaterThanOrEqual(512 * K);
  expect(new Readahead({ maxBytes: 0, initialBytes: 0 }).observe(0, 10)).toBeNull();
});

test("rankSources: listed, latency (coarse buckets) and spread (rendezvous)", () => {
  const items = [{ href: "https://a/x", rttMs: 5 }, { href: "https://b/x", rttMs: 0.5 }, { href: "https://c/x" }];
  expect(rankSources("listed", items, "n")).toEqual([0, 1, 2]);
  expect(rankSources("latency", items, "n")).toEqual([1, 0, 2]);
  expect(rankSources("latency", [{ href: "a", rttMs: 1.1 }, { href: "b", rttMs: 1.05 }], "n")).toEqual([0, 1]); // jitter: no flap
  // Spread: 3000 nodes over 3 servers → each server first for roughly a third; stable per node.
  const urls = ["https://10.0.0.1/i", "https://10.0.0.2/i", "https://10.0.0.3/i"].map((href) => ({ href }));
  const firsts = [0, 0, 0];
  for (let n = 0; n < 3000; n++) firsts[rankSources("spread", urls, `node${n}`)[0]]++;
  for (const f of firsts) expect(f).toBeGreaterThan(800);
  expect(rankSources("spread", urls, "node7")).toEqual(rankSources("spread", urls, "node7"));
  // Removing a server only moves the nodes that preferred it (rendezvous property).
  let moved = 0;
  for (let n = 0; n < 1000; n++) {
    const full = rankSources("spread", urls, `node${n}`).map((i) => urls[i].href);
    const less = rankSources("spread", urls.slice(0, 2), `node${n}`).map((i) => urls[i].href);
    if (full[0] !== urls[2].href && full[0] !== less[0]) moved++;
  }
  expect(moved).toBe(0);
  expect(() => rankSources("bogus" as never, urls, "n")).toThrow(/unknown source order/);
});

test("chooseImage: the largest agreeing group wins, ties go to the first listed, failures ignored", async () => {
  const { chooseImage } = await import("../../src/source/probe");
  const ok = (size: number, validator: string) => ({ ok: true as const, image: { size, validator } });
  const bad = { ok: false as const, reason: "connection refused" };
  expect(chooseImage([ok(10, "a"), ok(10, "b"), ok(10, "b")])).toEqual({ image: { size: 10, validator: "b" }, members: [1, 2] });
  expect(chooseImage([ok(10, "a"), ok(10, "b")])?.members).toEqual([0]);
  expect(chooseImage([bad, ok(10, "b"), ok(11, "b"), ok(10, "b")])?.members).toEqual([1, 3]); // size counts too
  expect(chooseImage([ok(10, "x"), ok(9, "y"), ok(9, "y"), ok(10, "x")])?.members).toEqual([0, 3]); // tie: first listed
  expect(chooseImage([bad, bad])).toBeUndefined();
  expect(chooseImage([])).toBeUndefined();
});

test("chooseImage: a server without a validator (usable only with a manifest) agrees with every server of its size", async () => {
  const { chooseImage } = await import("../../src/source/probe");
  const { NO_VALIDATOR } = await import("../../src/source/headers");
  const ok = (size: number, validator: string) => ({ ok: true as const, image: { size, validator } });
  const none = (size: number) => ok(size, NO_VALIDATOR);
  expect(chooseImage([none(10), ok(10, "a")])).toEqual({ image: { size: 10, validator: "a" }, members: [0, 1] });
  expect(chooseImage([none(10), none(10)])).toEqual({ image: { size: 10, validator: NO_VALIDATOR }, members: [0, 1] });
  expect(chooseImage([none(11), ok(10, "a")])?.members).toEqual([0]); // sizes differ: a tie, the first listed wins
  expect(chooseImage([ok(10, "a"), none(11), none(11)])?.members).toEqual([1, 2]);
  // Validators still have to agree among the servers that send one; the size-only server joins either group.
  expect(chooseImage([none(10), ok(10, "a"), ok(10, "b"), ok(10, "b")])).toEqual({ image: { size: 10, validator: "b" }, members: [0, 2, 3] });
  expect(chooseImage([none(10), ok(10, "a"), ok(10, "b")])?.members).toEqual([0, 1]); // tie between a and b: a is listed first
  expect(chooseImage([none(10), ok(11, "a"), ok(10, "b")])?.members).toEqual([0, 2]);
});
