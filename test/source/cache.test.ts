// BlockCache eviction order (issue 2): blocks whose bytes were all served go first, then untouched ones, then
// partially served ones; plus a random-operations property test against a simple model.
import { expect, test } from "bun:test";
import { BlockCache } from "../../src/source/cache";
import { Readahead } from "../../src/source/readahead";

const KiB = 1024;
const block = (n: number) => new Uint8Array(n);

test("spent blocks are evicted before untouched ones, untouched before partially served ones", () => {
  const evicted: Uint8Array[] = [];
  const c = new BlockCache(4 * 8 * KiB, (b) => evicted.push(b));
  const b = [0, 1, 2, 3].map(() => block(8 * KiB));
  b.forEach((x, i) => c.set(i, x));
  expect(c.served(0, 0, 4 * KiB)).toBe(false);      // block 0: partial
  expect(c.served(1, 0, 8 * KiB)).toBe(true);       // block 1: spent
  c.get(2);                                          // block 2: untouched, recently used; block 3 untouched, older
  c.get(1);                                          // recency alone must not save a spent block
  c.set(4, block(8 * KiB));
  expect(evicted).toEqual([b[1]]);
  c.set(5, block(8 * KiB));
  expect(evicted[1]).toBe(b[3]);                     // least recently used untouched block
  c.set(6, block(8 * KiB));
  expect(evicted[2]).toBe(b[2]);
  expect(c.has(0)).toBe(true);                       // the partial block outlived every untouched one
  expect(c.bytes).toBe(4 * 8 * KiB);
  expect(c.pendingBlocks).toBe(4);
});

test("release: idle gives back only spent blocks, a long idle every block; each through onEvict once", () => {
  const evicted: Uint8Array[] = [];
  const c = new BlockCache(1 << 20, (b) => evicted.push(b), 16 * KiB);
  const b = [0, 1, 2].map(() => block(8 * KiB));
  b.forEach((x, i) => c.set(i, x));
  c.served(0, 0, 8 * KiB);                           // spent
  c.served(1, 0, 4 * KiB);                           // partial; block 2 untouched
  c.release(false);
  expect(evicted).toEqual([b[0]]);
  expect(c.has(0)).toBe(false);
  expect(c.bytes).toBe(16 * KiB);
  expect(c.untouchedSize).toBe(8 * KiB);
  c.release(true);
  expect(new Set(evicted)).toEqual(new Set(b));
  expect(evicted.length).toBe(3);
  expect([c.bytes, c.size, c.untouchedSize, c.pendingBlocks]).toEqual([0, 0, 0, 0]);
  c.set(5, block(8 * KiB));                          // still usable afterwards
  expect(c.get(5)?.length).toBe(8 * KiB);
});

test("shedSpent: only spent blocks make room for a fetch, least recently used first, down to the budget given", () => {
  const evicted: Uint8Array[] = [];
  const c = new BlockCache(1 << 20, (b) => evicted.push(b));
  const b = [0, 1, 2, 3, 4].map(() => block(8 * KiB));
  b.forEach((x, i) => c.set(i, x));
  for (const i of [3, 0, 1]) c.served(i, 0, 8 * KiB);  // spent, in this order of use
  c.served(2, 0, 4 * KiB);                             // partial; block 4 untouched
  c.shedSpent(c.bytes - 12 * KiB);                     // room for 12 KiB: two spent blocks go
  expect(evicted).toEqual([b[3], b[0]]);
  c.shedSpent(0);                                      // as much room as possible: still only spent blocks
  expect(evicted).toEqual([b[3], b[0], b[1]]);
  expect([c.has(2), c.has(4), c.bytes]).toEqual([true, true, 16 * KiB]);
});

test("served pages: partial pages do not count, the short last page counts when read to the end", () => {
  const c = new BlockCache(1 << 20);
  c.set(0, block(10_000));                           // pages [0,4096) [4096,8192) [8192,10000)
  expect(c.served(0, 100, 8192)).toBe(false);        // page 0 only partly covered
  expect(c.served(0, 8192, 10_000)).toBe(false);
  expect(c.served(0, 0, 4096)).toBe(true);
  expect(c.served(0, 0, 1)).toBe(true);              // stays spent
  expect(c.served(7, 0, 1)).toBe(false);             // unknown block
  expect(c.served(0, -5, 1e9)).toBe(true);           // out-of-range bounds are clipped, never throw
});

test("property: random set/get/served never exceed the byte budget, never lose a block without onEvict", () => {
  let seed = 12345;
  const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  for (let round = 0; round < 200; round++) {
    const max = 1 + rnd(64 * KiB);
    const live = new Set<Uint8Array>();
    const c = new BlockCache(max, (b) => { expect(live.delete(b)).toBe(true); });
    const held = new Map<number, Uint8Array>();
    for (let op = 0; op < 300; op++) {
      const i = rnd(12), r = rnd(10);
      if (r < 4) {
        const buf = block(rnd(20 * KiB));
        c.set(i, buf);
        if (buf.length <= max) { live.add(buf); held.set(i, buf); }
      } else if (r < 7) {
        const got = c.get(i);
        if (got) expect(got).toBe(held.get(i)!);
      } else {
        const a = rnd(24 * KiB), z = a + rnd(24 * KiB);
        c.served(i, a, z);
      }
      expect(c.bytes).toBeLessThanOrEqual(max);
      let sum = 0;
      for (const b of live) sum += b.length;
      expect(sum).toBe(c.bytes);                     // every block not reported evicted is still accounted for
      expect(c.size).toBe(live.size);
    }
    c.clear();
    expect(c.bytes).toBe(0);
  }
});

test("Readahead.shortened: a range the engine fetched only in part is asked for again", () => {
  const ra = new Readahead({ maxBytes: 1024 * KiB, initialBytes: 256 * KiB });
  expect(ra.observe(0, 128 * KiB)).toBeNull();
  const r1 = ra.observe(128 * KiB, 128 * KiB)!;
  expect(r1).toEqual({ start: 256 * KiB, end: 512 * KiB });
  ra.shortened(300 * KiB);                           // budget spent: only [256, 300) KiB was fetched
  const r2 = ra.observe(256 * KiB, 128 * KiB)!;
  expect(r2.start).toBe(384 * KiB);                  // from the stream's head: the cut part is not lost
  ra.shortened(0);                                   // never moves behind the head
  expect(ra.observe(384 * KiB, 128 * KiB)!.start).toBe(512 * KiB);
});
