// Bounded LRU cache of image blocks in RAM, beside the kernel page cache (holds readahead until it is read).

export class BlockCache {
  private map = new Map<number, Uint8Array>(); // Map keeps insertion order: first entry = least recently used
  private used = 0;

  /** onEvict receives each block that leaves the cache (evicted or replaced), e.g. to recycle its buffer. */
  constructor(readonly maxBytes: number, private readonly onEvict: (bytes: Uint8Array) => void = () => {}) {
    if (!Number.isFinite(maxBytes) || maxBytes < 0) throw new RangeError(`cache size must be ≥ 0 bytes, got ${maxBytes}`);
  }

  get bytes(): number { return this.used; }
  get size(): number { return this.map.size; }

  get(index: number): Uint8Array | undefined {
    const v = this.map.get(index);
    if (v !== undefined) { this.map.delete(index); this.map.set(index, v); } // refresh recency
    return v;
  }

  has(index: number): boolean { return this.map.has(index); }

  set(index: number, bytes: Uint8Array): void {
    if (bytes.length > this.maxBytes) return; // never cache what cannot fit
    const old = this.map.get(index);
    if (old !== undefined) { this.used -= old.length; this.map.delete(index); if (old !== bytes) this.onEvict(old); }
    this.map.set(index, bytes);
    this.used += bytes.length;
    for (const [k, v] of this.map) {
      if (this.used <= this.maxBytes) break;
      this.map.delete(k);
      this.used -= v.length;
      this.onEvict(v);
    }
  }

  clear(): void { this.map.clear(); this.used = 0; }
}
