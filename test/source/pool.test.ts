// BlockPool: a block is never handed out again while some read holds it pinned.
import { expect, test } from "bun:test";
import { BlockPool } from "../../src/source/pool";
import { BlockCache } from "../../src/source/cache";

test("a released block is reused at once unless pinned; then only after its last unpin", () => {
  const p = new BlockPool({ blockSize: 16, maxBlocks: 4 });
  const a = p.take(16);
  p.release(a);
  expect(p.take(16)).toBe(a);
  p.pin(a);
  p.pin(a);
  p.release(a);                 // the cache lets go while two reads hold it
  expect(p.stats().retired).toBe(1);
  expect(p.take(16)).not.toBe(a);
  p.unpin(a);
  expect(p.take(16)).not.toBe(a);
  p.unpin(a);                   // last pin: free now
  expect(p.stats()).toMatchObject({ retired: 0, pinned: 0, free: 1 });
  expect(p.take(16)).toBe(a);
  p.unpin(a);                   // unbalanced unpin: ignored
  expect(p.stats().pinned).toBe(0);
});

test("pinning a free block that was not handed out again takes it back", () => {
  const p = new BlockPool({ blockSize: 8, maxBlocks: 4 });
  const a = p.take(8);
  a.fill(7);
  p.release(a);                 // evicted: free
  p.pin(a);                     // a read obtained it just before: it must not be handed out
  expect(p.take(8)).not.toBe(a);
  expect(a[0]).toBe(7);
  p.unpin(a);
  expect(p.take(8)).toBe(a);
});

test("other sizes are never pooled; blocks beyond the budget go to the GC; trim empties the free list", () => {
  let freed = 0;
  const p = new BlockPool({ blockSize: 8, maxBlocks: 2, onFree: () => freed++ });
  const short = p.take(5);
  p.release(short);
  expect(p.take(5)).not.toBe(short);
  expect(p.spare()).toBe(2);
  const taken = Array.from({ length: 5 }, () => p.take(8)); // take() never refuses: the caller asks spare() first
  expect(p.spare()).toBe(0);
  for (const b of taken) p.release(b);
  expect(p.stats()).toMatchObject({ free: 2, owned: 2, dropped: 3 });
  expect(freed).toBe(2);        // only blocks kept for reuse wake a waiting fetch
  expect(p.spare()).toBe(2);
  p.trim();
  expect(p.stats()).toMatchObject({ free: 0, owned: 0 });
  expect(p.spare()).toBe(2);    // trimmed blocks are the GC's: the budget is whole again
});

test("spare() counts free blocks and unused budget; pinned and retired blocks use the budget until freed", () => {
  const p = new BlockPool({ blockSize: 8, maxBlocks: 3 });
  const a = p.take(8), b = p.take(8);
  expect(p.spare()).toBe(1);
  p.pin(a);
  p.release(a);                 // evicted while a read holds it: retired, still using the budget
  p.release(b);                 // free: can be taken again
  expect(p.spare()).toBe(2);
  p.unpin(a);
  expect(p.spare()).toBe(3);
  expect(p.stats()).toMatchObject({ free: 2, owned: 2, retired: 0 });
});

// Property: a random interleaving of reads (pinning blocks from a cache), evictions, fetches (taking pool blocks and
// filling them) and read ends (unpinning) never overwrites a block a read holds. Bounded iterations, seeded.
test("random interleavings never recycle a block a read holds", () => {
  let seed = 12345;
  const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) >>> 0; return (seed >>> 16) % n; }; // high bits: the low bits of an LCG cycle quickly
  for (let round = 0; round < 50; round++) {
    const pool = new BlockPool({ blockSize: 4, maxBlocks: 1 + rnd(6) });
    const cache = new BlockCache(4 * (1 + rnd(6)), (b) => pool.release(b));
    let stamp = 1;
    const reads: { buf: Uint8Array; value: number }[][] = [];
    for (let step = 0; step < 400; step++) {
      const op = rnd(4);
      if (op === 0) reads.push([]);
      else if (op === 1 && reads.length) {
        const rd = reads[rnd(reads.length)];
        const b = cache.get(rnd(10));
        if (b && !rd.some((h) => h.buf === b)) { pool.pin(b); rd.push({ buf: b, value: b[0] }); }
      } else if (op === 2) {
        const buf = pool.take(4);
        buf.fill(stamp++ & 255);        // a fetch writes the whole block
        cache.set(rnd(10), buf);
      } else if (op === 3 && reads.length) {
        const [rd] = reads.splice(rnd(reads.length), 1);
        for (const h of rd) { expect(h.buf[0]).toBe(h.value); pool.unpin(h.buf); } // intact until it is done
      }
      for (const rd of reads) for (const h of rd) expect(h.buf[0]).toBe(h.value);
    }
    for (const rd of reads) for (const h of rd) pool.unpin(h.buf);
    expect(pool.stats().pinned).toBe(0);
    expect(pool.stats().retired).toBe(0);
  }
});
