// Recycled block buffers for the range engine, handed out again only once no read holds a view of them.
//
// Why: every byte fetched is copied into a block buffer. Fresh buffers cost a page fault per 4 KiB on first touch
// (measured: that copy was ~25% of the daemon's CPU at full speed, and freed buffers pile up until the next GC, which
// is most of the daemon's RSS). Reusing blocks evicted from the cache removes both.
//
// Safety rule: a read pins every block it obtains (from the cache at once, from a fetch when the fetch completes, before
// the blocks enter the cache) and unpins them when its views are released. A block the cache lets go of while pinned is
// retired: it becomes free only when the last pin goes. Pinning a block that is free but not yet handed out again takes
// it back from the free list (its bytes are intact: nothing writes into a block before take()), but the engine never
// should: a read pins a cached block before anything can start a fetch, since that fetch may shed the block and take
// it at once (then it is a fetch's buffer, and no pin helps). stats().pinnedFree counts such pins, for tests.
//
// An earlier version kept every released block until all reads begun before the release had ended: a read waiting on
// a slow fetch then held back every release, the bounded quarantine overflowed, and ~20% of the blocks of a 1 GiB read
// were fresh allocations (bench: pool stats allocated 1756 / reused 6436). Pins hold exactly what is in use.
//
// Budget: at most maxBlocks blocks exist at once (in a fetch, in the cache, held by a read, or free). The engine asks
// spare() before it starts a fetch, so a long read reuses the same blocks instead of growing a free list beside them;
// take() itself never refuses (a fetch that had to go over the budget is given back to the GC when released).

export interface BlockPoolOptions {
  blockSize: number;    // only buffers of exactly this length are pooled (an image's short last block is not)
  maxBlocks: number;    // the budget: blocks that exist at once (handed out, pinned or free); more are left to the GC
  onFree?: () => void;  // a block became free (the engine may start a fetch that waited for one)
}

export class BlockPool {
  private readonly free = new Set<Uint8Array>();     // insertion order: oldest first
  private readonly pins = new Map<Uint8Array, number>();
  private readonly retired = new Set<Uint8Array>();  // let go of by the cache while pinned
  private c = { reused: 0, allocated: 0, dropped: 0, pinnedFree: 0 };
  private owned = 0; // pooled blocks in existence: handed out (in a fetch, the cache or a read) or free

  constructor(readonly o: BlockPoolOptions) {
    if (!Number.isInteger(o.blockSize) || o.blockSize < 1) throw new RangeError(`block pool: bad block size ${o.blockSize}`);
  }

  /** A buffer of `length` bytes with arbitrary contents (the caller overwrites every byte). */
  take(length: number): Uint8Array {
    if (length === this.o.blockSize) {
      for (const b of this.free) {
        this.free.delete(b);
        this.c.reused++;
        return b;
      }
    }
    this.c.allocated++;
    if (length === this.o.blockSize) this.owned++;
    // No zero-fill: every byte is overwritten by a fetch, or the block is given back unused. (Until commit 1caa2dd pooled
    // blocks were SharedArrayBuffers, filled by a fetch thread and written out by the I/O pool; both are gone.)
    return Buffer.allocUnsafe(length);
  }

  /** The cache (or a failed fetch) lets go of a block: free now, or when its last pin goes. */
  release(buf: Uint8Array): void {
    if (buf.length !== this.o.blockSize) return;
    if (this.pins.has(buf)) this.retired.add(buf);
    else this.toFree(buf);
  }

  /** A read holds views of `buf` until the matching unpin. */
  pin(buf: Uint8Array): void {
    this.pins.set(buf, (this.pins.get(buf) ?? 0) + 1);
    if (this.free.delete(buf)) { this.retired.add(buf); this.c.pinnedFree++; } // released but not handed out yet: keep it
  }

  unpin(buf: Uint8Array): void {
    const n = this.pins.get(buf);
    if (n === undefined) return;
    if (n > 1) { this.pins.set(buf, n - 1); return; }
    this.pins.delete(buf);
    if (this.retired.delete(buf)) this.toFree(buf);
  }

  /** Blocks that can be taken now without going over the budget. */
  spare(): number { return this.free.size + Math.max(0, this.o.maxBlocks - this.owned); }

  private toFree(buf: Uint8Array): void {
    if (this.owned > this.o.maxBlocks) { this.owned--; this.c.dropped++; return; }
    this.free.add(buf);
    this.o.onFree?.();
  }

  stats(): { free: number; pinned: number; retired: number; owned: number; reused: number; allocated: number; dropped: number; pinnedFree: number } {
    return { free: this.free.size, pinned: this.pins.size, retired: this.retired.size, owned: this.owned, ...this.c };
  }

  /** Drops the blocks kept for reuse (idle: give the memory back); retired ones follow as their pins go. */
  trim(): void { this.owned = Math.max(0, this.owned - this.free.size); this.free.clear(); }

  clear(): void { this.owned = 0; this.free.clear(); this.retired.clear(); }
}
