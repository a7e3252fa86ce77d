// BlockPool: a released block is never handed out while a read that began before the release is still running.
import { expect, test } from "bun:test";
import { BlockPool } from "../../src/source/pool";
import { BlockCache } from "../../src/source/cache";

test("reuses blocks only after older reads end; other sizes are never pooled", () => {
  const p = new BlockPool({ blockSize: 16, maxFree: 4, maxQuarantine: 4 });
  const a = p.take(16);
  p.release(a);                 // no read running: free at once
  expect(p.take(16)).toBe(a);
  const r1 = p.beginRead();
  p.release(a);                 // r1 may still hold a
  expect(p.take(16)).not.toBe(a);
  const r2 = p.beginRead();     // began after the release: cannot see a
  p.endRead(r1);
  expect(p.stats().quarantined).toBe(0);
  expect(p.take(16)).toBe(a);
  p.endRead(r2);
  const short = p.take(10);
  p.release(short);
  expect(p.take(10)).not.toBe(short);
  expect(p.stats().free).toBe(0);
});

test("quarantine and free list stay bounded", () => {
  const p = new BlockPool({ blockSize: 8, maxFree: 2, maxQuarantine: 3 });
  const r = p.beginRead();
  for (let i = 0; i < 10; i++) p.release(new Uint8Array(8));
  expect(p.stats().quarantined).toBe(3);
  p.endRead(r);
  expect(p.stats().free).toBe(2);
  expect(p.stats().quarantined).toBe(0);
});

// Property: a random interleaving of reads (taking blocks from a cache), evictions and fetches (taking pool blocks
// and filling them) never overwrites a block a running read obtained. Bounded iterations, seeded.
test("random interleavings never recycle a block a running read holds", () => {
  let seed = 12345;
  const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) >>> 0; return (seed >>> 16) % n; }; // high bits: the low bits of an LCG cycle quickly
  for (let round = 0; round < 50; round++) {
    const pool = new BlockPool({ blockSize: 4, maxFree: 1 + rnd(6), maxQuarantine: 1 + rnd(8) });
    const cache = new BlockCache(4 * (1 + rnd(6)), (b) => pool.release(b));
    let stamp = 1;
    const reads: { epoch: number; held: { buf: Uint8Array; value: number }[] }[] = [];
    for (let step = 0; step < 400; step++) {
      const op = rnd(4);
      if (op === 0) reads.push({ epoch: pool.beginRead(), held: [] });
      else if (op === 1 && reads.length) {
        const rd = reads[rnd(reads.length)];
        const b = cache.get(rnd(10));
        if (b) rd.held.push({ buf: b, value: b[0] });
      } else if (op === 2) {
        const buf = pool.take(4);
        buf.fill(stamp++ & 255);        // a fetch writes the whole block
        cache.set(rnd(10), buf);
      } else if (op === 3 && reads.length) {
        const [rd] = reads.splice(rnd(reads.length), 1);
        for (const h of rd.held) expect(h.buf[0]).toBe(h.value); // what it obtained is intact when it copies out
        pool.endRead(rd.epoch);
      }
      for (const rd of reads) for (const h of rd.held) expect(h.buf[0]).toBe(h.value);
    }
  }
});
