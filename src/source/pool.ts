// Recycled block buffers for the range engine, handed out again only once no read that could still see them is running.
//
// Why: every byte fetched is copied into a block buffer. Fresh buffers cost a page fault per 4 KiB on first touch
// (measured: that copy was ~25% of the daemon's CPU at full speed, and freed buffers pile up until the next GC, which
// is most of the daemon's RSS). Reusing blocks evicted from the cache removes both.
//
// Safety rule: a released block may still be referenced by a read that obtained it before (from the cache or from a
// fetch it joined) and has not yet copied it out, or whose views of it (RemoteImage.readViews) are not yet released. So a released block is stamped with the current read epoch and
// stays in quarantine until every read that started before the release has finished. A block in quarantine is never
// written; one dropped from a full quarantine is simply left to the garbage collector.

export interface BlockPoolOptions {
  blockSize: number;    // only buffers of exactly this length are pooled (an image's short last block is not)
  maxFree: number;      // blocks kept ready for reuse; more are left to the GC
  maxQuarantine: number; // released blocks waiting for older reads to finish; more are left to the GC
}

export class BlockPool {
  private free: Uint8Array[] = [];
  private quarantine: { buf: Uint8Array; epoch: number }[] = []; // epochs ascending
  private readonly active = new Map<number, true>();              // reads in progress; insertion order = epoch order
  private nextEpoch = 1;
  private c = { reused: 0, allocated: 0, dropped: 0 };

  constructor(readonly o: BlockPoolOptions) {
    if (!Number.isInteger(o.blockSize) || o.blockSize < 1) throw new RangeError(`block pool: bad block size ${o.blockSize}`);
  }

  /** A buffer of `length` bytes with arbitrary contents (the caller overwrites every byte). */
  take(length: number): Uint8Array {
    if (length === this.o.blockSize) {
      const b = this.free.pop();
      if (b) { this.c.reused++; return b; }
    }
    this.c.allocated++;
    // Pooled blocks live in shared memory: the FUSE writer thread (src/fuse/writer.ts) writes views of them to
    // /dev/fuse without a copy. Others (an image's short last block) need no sharing: no zero-fill, every byte is
    // overwritten or the buffer is discarded.
    return length === this.o.blockSize ? new Uint8Array(new SharedArrayBuffer(length)) : Buffer.allocUnsafe(length);
  }

  /** Gives a block back. It is reused only after every read begun so far has ended (see the module comment). */
  release(buf: Uint8Array): void {
    if (buf.length !== this.o.blockSize) return;
    if (this.active.size === 0) { this.toFree(buf); return; } // no read can hold it
    if (this.quarantine.length >= this.o.maxQuarantine) { this.quarantine.shift(); this.c.dropped++; }
    this.quarantine.push({ buf, epoch: this.nextEpoch });
  }

  /** Marks the start of a read that may obtain blocks; pass the result to endRead once it no longer uses them. */
  beginRead(): number {
    const e = this.nextEpoch++;
    this.active.set(e, true);
    return e;
  }

  endRead(epoch: number): void {
    this.active.delete(epoch);
    // Blocks released at epoch E were visible only to reads with an epoch below E.
    let oldest = Infinity;
    for (const k of this.active.keys()) { oldest = k; break; }
    let n = 0;
    while (n < this.quarantine.length && this.quarantine[n].epoch <= oldest) n++;
    if (n === 0) return;
    for (let i = 0; i < n; i++) this.toFree(this.quarantine[i].buf);
    this.quarantine.splice(0, n);
  }

  private toFree(buf: Uint8Array): void {
    if (this.free.length < this.o.maxFree) this.free.push(buf);
    else this.c.dropped++;
  }

  stats(): { free: number; quarantined: number; reused: number; allocated: number; dropped: number; activeReads: number } {
    return { free: this.free.length, quarantined: this.quarantine.length, activeReads: this.active.size, ...this.c };
  }

  /** Drops the blocks kept for reuse (idle: give the memory back); quarantined ones follow as their reads end. */
  trim(): void { this.free = []; }

  clear(): void { this.free = []; this.quarantine = []; }
}
