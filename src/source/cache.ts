// Bounded cache of image blocks in RAM beside the kernel page cache: it keeps the bytes the kernel has not read yet.
//
// Why not plain LRU: once the kernel has read every byte of a block, its page cache holds them (the FUSE file is opened
// with FOPEN_KEEP_CACHE), so our copy is rarely needed again. The valuable blocks are the ones with bytes not yet
// handed out, above all the rest of a block fetched whole for a small random read (reads are rarely block-aligned, and
// a boot reads most of its image sooner or later). Plain LRU evicted those under a stream of fresh fetches and the
// engine fetched them again (issue 2: ~1.4-1.8x the distinct bytes). So eviction goes, each class in LRU order:
// "spent" blocks (every byte served) first; then "untouched" ones (no byte served yet: readahead the reader has not
// reached) beyond a reserve for readahead; then "partial" ones (some bytes served, some not); untouched ones last.

/** Served bytes are tracked per 4 KiB page, the kernel's unit of reading a file through its page cache. */
const PAGE = 4096;

interface Pending { bytes: Uint8Array; unread: Uint8Array; left: number } // unread[p] = 1 while page p was never served

export class BlockCache {
  // Maps keep insertion order: the first entry is the least recently used.
  private untouched = new Map<number, Pending>();
  private partial = new Map<number, Pending>();
  private spent = new Map<number, Uint8Array>();
  private used = 0;
  private untouchedBytes = 0;

  /**
   * onEvict receives each block that leaves the cache (evicted or replaced), e.g. to recycle its buffer.
   * untouchedReserve: bytes of untouched blocks (readahead) kept ahead of partial ones (default 0; the engine passes
   * its readahead window, so a stream's lookahead is not evicted before the reader gets there).
   */
  constructor(readonly maxBytes: number, private readonly onEvict: (bytes: Uint8Array) => void = () => {},
    private readonly untouchedReserve = 0) {
    if (!Number.isFinite(maxBytes) || maxBytes < 0) throw new RangeError(`cache size must be ≥ 0 bytes, got ${maxBytes}`);
  }

  get bytes(): number { return this.used; }
  get size(): number { return this.untouched.size + this.partial.size + this.spent.size; }
  /** Blocks holding bytes never served yet (for status and tests). */
  get pendingBlocks(): number { return this.untouched.size + this.partial.size; }
  /** Bytes in blocks no byte of which has been served yet (readahead not reached yet). */
  get untouchedSize(): number { return this.untouchedBytes; }

  get(index: number): Uint8Array | undefined {
    for (const m of [this.untouched, this.partial]) {
      const p = m.get(index);
      if (p !== undefined) { m.delete(index); m.set(index, p); return p.bytes; } // refresh recency
    }
    const v = this.spent.get(index);
    if (v !== undefined) { this.spent.delete(index); this.spent.set(index, v); }
    return v;
  }

  /** Whether the block is cached and none of its bytes has been served yet. */
  isUntouched(index: number): boolean { return this.untouched.has(index); }

  has(index: number): boolean { return this.untouched.has(index) || this.partial.has(index) || this.spent.has(index); }

  /** Adds a block none of whose bytes has been served yet. */
  set(index: number, bytes: Uint8Array): void {
    if (bytes.length > this.maxBytes) return; // never cache what cannot fit
    this.remove(index, bytes);
    const pages = Math.ceil(bytes.length / PAGE);
    if (pages === 0) this.spent.set(index, bytes);
    else { this.untouched.set(index, { bytes, unread: new Uint8Array(pages).fill(1), left: pages }); this.untouchedBytes += bytes.length; }
    this.used += bytes.length;
    this.evict(index);
  }

  /**
   * Records that bytes [from, to) of block `index` were handed to a reader. A page counts once wholly covered (or
   * covered up to the block's end); when no page is left unread the block becomes the first choice for eviction.
   * Returns true when every byte of the cached block has now been served.
   */
  served(index: number, from: number, to: number): boolean {
    const p = this.partial.get(index) ?? this.untouched.get(index);
    if (p === undefined) return this.spent.has(index);
    const len = p.bytes.length;
    from = Math.max(0, from); to = Math.min(len, to);
    const first = Math.ceil(from / PAGE), last = to === len ? p.unread.length : Math.floor(to / PAGE); // pages [first, last)
    for (let i = first; i < last; i++) if (p.unread[i]) { p.unread[i] = 0; p.left--; }
    if (this.untouched.delete(index)) this.untouchedBytes -= p.bytes.length;
    this.partial.delete(index);
    if (p.left > 0) { this.partial.set(index, p); return false; }
    this.spent.set(index, p.bytes); // most recently used among the spent ones
    return true;
  }

  /**
   * Gives back blocks (each through onEvict): with `all` false only the spent ones (the kernel's page cache holds their
   * bytes, so they are the first to go anyway), with `all` true every block.
   */
  release(all: boolean): void {
    const maps: (Map<number, Uint8Array> | Map<number, Pending>)[] = all ? [this.spent, this.untouched, this.partial] : [this.spent];
    for (const m of maps) for (const [k, v] of m) this.drop(m, k, v);
  }

  /**
   * Evicts spent blocks (least recently used first) until at most `budget` bytes are cached, or none is left: room for
   * blocks about to be fetched, taken only from blocks whose bytes the kernel's page cache already holds.
   */
  shedSpent(budget: number): void {
    for (const [k, v] of this.spent) {
      if (this.used <= budget) return;
      this.drop(this.spent, k, v);
    }
  }

  clear(): void { this.untouched.clear(); this.partial.clear(); this.spent.clear(); this.used = 0; this.untouchedBytes = 0; }

  /** Drops the entry at `index` (if any) before it is replaced by `next`. */
  private remove(index: number, next: Uint8Array): void {
    const old = this.partial.get(index)?.bytes ?? this.untouched.get(index)?.bytes ?? this.spent.get(index);
    if (old === undefined) return;
    if (this.untouched.delete(index)) this.untouchedBytes -= old.length;
    this.partial.delete(index);
    this.spent.delete(index);
    this.used -= old.length;
    if (old !== next) this.onEvict(old);
  }

  /** Frees space down to the budget, never taking `keep` (the block just added: it was fetched to be used). */
  private evict(keep: number): void {
    const over = () => this.used > this.maxBytes;
    const dropFrom = (m: Map<number, Uint8Array> | Map<number, Pending>, until: () => boolean) => {
      for (const [k, v] of m) {
        if (!over() || until()) return;
        if (k !== keep) this.drop(m, k, v);
      }
    };
    dropFrom(this.spent, () => false);
    dropFrom(this.untouched, () => this.untouchedBytes <= this.untouchedReserve);
    dropFrom(this.partial, () => false);
    dropFrom(this.untouched, () => false);
  }

  /** Takes one entry out of its class map, keeps the byte counts right and hands its buffer to onEvict. */
  private drop(m: Map<number, Uint8Array> | Map<number, Pending>, k: number, v: Uint8Array | Pending): void {
    const bytes = v instanceof Uint8Array ? v : v.bytes;
    m.delete(k);
    this.used -= bytes.length;
    if (m === this.untouched) this.untouchedBytes -= bytes.length;
    this.onEvict(bytes);
  }
}
