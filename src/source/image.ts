// One remote image served by N redundant HTTPS servers, as the FUSE read path sees it: RemoteImage.read(offset, length)
// → exact bytes. Opens (probe + agreement), splits reads into blocks, coalesces, reads ahead, caches, and fetches each
// span with failover across the server set (failover.ts).
import { hostname } from "node:os";
import { createLogger, type Logger } from "../util/log";
import { parseImageUrl, type ImageUrl } from "./url";
import { directFetcher, SourceFault, type PoolOptions, type RangeTimeouts } from "./http";
import { AGREEMENT_RULE, chooseImage, probeSource, type ImageIdentity, type ProbeResult } from "./probe";
import { Source, type SourceStatus } from "./source";
import { BlockCache } from "./cache";
import { BlockPool } from "./pool";
import { Readahead } from "./readahead";
import { checkWeight, ORDERS, type SourceOrder } from "./order";
import { ServerSet, expectFrom, jitter, secs } from "./failover";
import { NO_VALIDATOR } from "./headers";

export type { SourceOrder } from "./order";
export type { SourceStatus, SourceState } from "./source";

/**
 * A signed manifest's check of every chunk. With one, the manifest is the image's validator: a server that sends
 * neither ETag nor Last-Modified is usable (compared with the others on size alone), and with `size` every server must
 * serve exactly that many bytes.
 */
export interface ChunkVerifier {
  chunkSize: number;                                  // engine fetches/caches in whole aligned chunks when set
  verify(index: number, bytes: Uint8Array): boolean;  // false → source fault: refetch elsewhere, mark faulty
  size?: number;                                      // the image size the manifest describes
}

/** Why a server without a validator is refused when no manifest is in use. */
export const NO_VALIDATOR_REFUSAL = "sends neither an ETag nor a Last-Modified header, so nothing proves it serves the same " +
  "file as the other servers, or that the file stays the same while it is read; refused without a signed manifest " +
  "(--manifest URL --image-key PEM: every chunk is then verified, and such a server is compared on size alone)";

export interface RemoteImageOptions {
  ca?: string | Buffer;        // PEM bundle contents; undefined = system store
  order?: SourceOrder;         // default "listed"
  nodeId?: string;             // for "spread" (rendezvous hashing); default os.hostname()
  weights?: number[];          // for "spread", one per URL (same order): relative share, 0 = last resort; default 1 each
  cacheMb?: number;            // RAM block cache beside the page cache; default 8 (small: the page cache is the main one).
                               // Blocks being fetched share it (spent cached blocks make room), plus one request's worth
  ioTimeoutMs?: number;        // undefined/0 = retry forever (right for a root fs); else EIO after this long
  stallTimeoutMs?: number;     // no progress for this long → abandon request, fail over (default 5 s)
  requestTimeoutMs?: number;   // per-request deadline (default 30 s)
  connectTimeoutMs?: number;   // TCP+TLS connect (default 5 s)
  connectionsPerSource?: number; // keep-alive connections per server (default 8)
  maxInFlight?: number;        // range requests outstanding at once, all servers (default 8; demand reads keep a quarter)
  readaheadMaxBytes?: number;  // largest sequential readahead window (default 4 MiB, at most a quarter of the cache)
  probeIntervalMs?: number;    // background fail-back probe, jittered ±20% (default 10 s)
  holdDownMs?: number;         // a recovered server stays "degraded" (used only as a fallback) this long (default 30 s)
  blockSize?: number;          // cache/fetch unit without a verifier (default 128 KiB); the verifier's chunkSize wins
  maxRequestBytes?: number;    // largest single range request (default 1 MiB; at least one block)
  verifier?: ChunkVerifier;
  log?: Logger;
}

export interface ImageStatus {
  name: string; size: number; validator: string; sources: SourceStatus[];
  bytesFetched: number;   // bytes accepted from servers
  cacheHits: number;      // blocks served from the RAM cache
  cacheMisses: number;    // blocks that needed a new fetch
  readsInFlight: number; readsTotal: number; uptimeSec: number; order: SourceOrder;
  // Added beyond the first interface sketch (informational):
  coalescedReads: number; // blocks a read found already being fetched, so it joined that fetch
  fetches: number;        // range requests sent (including failed ones)
  readaheadBytes: number; // bytes requested by readahead
  blockSize: number; cacheBytes: number;
  blockBytes: number;     // every image block held: cached, being fetched, held by a read, or spare (the block budget)
}

/** A zero-copy read: views of cached blocks and the call that unpins them (see RemoteImage.readViews). */
export interface ImageViews {
  views: Uint8Array[];
  release(): void;
}

/** The error read() rejects with when ioTimeoutMs passes without data: errno 5 (EIO) for the FUSE layer. */
export class IoError extends Error {
  override name = "IoError";
  readonly errno = 5;
  readonly code = "EIO";
}

const KiB = 1024, MiB = 1024 * KiB;
const DEFAULTS = {
  cacheMb: 8, stallTimeoutMs: 5000, requestTimeoutMs: 30_000, connectTimeoutMs: 5000, connectionsPerSource: 8,
  maxInFlight: 8, readaheadMaxBytes: 4 * MiB, probeIntervalMs: 10_000, holdDownMs: 30_000, blockSize: 128 * KiB,
};
// Requests in flight (DEFAULTS.maxInFlight): 8 and 16 gave the same MB/s at 0, 2 and 20 ms RTT (make bench, compiled
// daemon, 2 alternating runs: 929/977 vs 921/928 MB/s at 0 ms, 732/673 vs 706/733 at 2 ms, 298/302 vs 297/317 at
// 20 ms), and 8 keeps ~9 MiB less in memory under load (blocks in flight and the pool's spares: peak 91 vs 100 MiB).
// One range request: large enough for line rate, small enough that a failed one is cheap to redo elsewhere.
const MAX_REQUEST_BYTES = 1 * MiB;
const BACKOFF_MIN_MS = 200, BACKOFF_MAX_MS = 10_000;
/** Background fill requests in flight at once (all servers together): low priority, so demand reads find slots free. */
const FILL_MAX_IN_FLIGHT = 2;

type Kind = "demand" | "readahead" | "fill";
interface Span {
  first: number; count: number; kind: Kind; started: boolean;
  promise: Promise<Uint8Array[]>; resolve(blocks: Uint8Array[]): void; reject(e: unknown): void; // one entry per block
  joins?: number[];   // per block: reads waiting for it, each pinned as the span completes (see pool.ts)
}
/** A readahead or fill fetch that gave up; readers never see it (they re-request as demand). */
class Dropped extends Error {}

function checkNumber(name: string, v: number | undefined, min: number, integer = false): void {
  if (v === undefined) return;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || (integer && !Number.isInteger(v))) {
    throw new Error(`invalid option ${name}=${String(v)}: must be ${integer ? "an integer" : "a number"} ≥ ${min}`);
  }
}

export class RemoteImage {
  readonly name: string;
  readonly size: number;
  readonly mtimeMs: number;
  readonly validator: string;

  private readonly order: SourceOrder;
  private readonly servers: ServerSet;
  private readonly bs: number;
  private readonly spanBlocks: number;
  private readonly maxInFlight: number;
  private readonly connections: number;
  private readonly timeouts: RangeTimeouts;
  private readonly ioTimeoutMs: number;
  private readonly verifier?: ChunkVerifier;
  private readonly cache: BlockCache;
  private readonly pool: BlockPool;
  private readonly readahead: Readahead;
  private inflight = new Map<number, Span>();
  private readonly servedBits: Uint8Array; // one bit per block: every byte of it was handed to a reader at least once
  private readonly raMax: number;          // unread readahead (cached or in flight), all streams together, stays within this
  private raPending = 0;                   // bytes of readahead spans not yet fetched or promoted
  private demandQ: Span[] = [];
  private raQ: Span[] = [];
  private running = 0;
  // Background fill (fillChunks): callers waiting for a request slot, fill requests running, the next server in turn.
  private fillQ: (() => void)[] = [];
  private fillRunning = 0;
  private fillTurn = 0;
  /** Called with every chunk a demand or readahead fetch brought and verified (the fill keeps it: no second fetch). */
  onFetched?: (index: number, bytes: Uint8Array) => void;
  /**
   * A local copy of some chunks (the background fill's, src/mount/fill.ts): a demand or readahead span whose every
   * chunk it holds is read from it, verified against the manifest again (a local disk is not trusted more than a
   * mirror), instead of being fetched; a chunk that fails is fetched as usual.
   */
  localCopy?: { holds(chunk: number): boolean; readInto(chunk: number, into: Uint8Array): boolean; unusable(chunk: number): void };
  private closed = false;
  /**
   * Set when a read ran out its io timeout with no server delivering; cleared by the next successful fetch. While
   * set, reads not served from the cache fail at once (their fetch still goes on in the background), so the io
   * timeout bounds a reader's whole wait: the kernel re-issues a failed read, and each attempt must not wait again.
   */
  private ioExpiredSince = 0;
  private sleepers = new Set<() => void>();
  private readonly started = Date.now();
  private c = { fillBytes: 0, localBytes: 0, bytesFetched: 0, cacheHits: 0, cacheMisses: 0, readsInFlight: 0, readsTotal: 0, coalesced: 0, fetches: 0, readaheadBytes: 0 };

  private constructor(private readonly sources: Source[], img: ImageIdentity, name: string, opts: RemoteImageOptions, log: Logger) {
    this.name = name;
    this.size = img.size;
    this.validator = img.validator;
    this.mtimeMs = img.lastModifiedMs ?? Date.now();
    this.order = opts.order ?? "listed";
    this.verifier = opts.verifier;
    this.bs = opts.verifier ? opts.verifier.chunkSize : opts.blockSize ?? DEFAULTS.blockSize;
    this.spanBlocks = Math.max(1, Math.floor((opts.maxRequestBytes ?? MAX_REQUEST_BYTES) / this.bs));
    this.maxInFlight = opts.maxInFlight ?? DEFAULTS.maxInFlight;
    this.connections = opts.connectionsPerSource ?? DEFAULTS.connectionsPerSource;
    this.timeouts = { stallMs: opts.stallTimeoutMs ?? DEFAULTS.stallTimeoutMs, requestMs: opts.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs };
    this.ioTimeoutMs = opts.ioTimeoutMs ?? 0;
    const cacheBytes = Math.floor((opts.cacheMb ?? DEFAULTS.cacheMb) * MiB);
    // Blocks leaving the cache are recycled for later fetches (see pool.ts for when that is safe).
    // One budget for every block the engine holds, cached or being fetched: the cache plus one request. A long
    // sequential read fills the cache with spent blocks, which then make room for the fetches (blocksFor), instead of
    // a cache full of them beside a full set of requests in flight. Measured (compiled daemon, 1 GiB, 3 alternating
    // runs at 0 and 2 ms RTT): budget cache + 1 MiB vs cache + 8 MiB of requests, same MB/s, peak VmRSS 78-80 vs 84-87
    // MiB; cache + 4 MiB in between. At 20 ms RTT 304 MB/s with either.
    this.pool = new BlockPool({ blockSize: this.bs, maxBlocks: Math.ceil(cacheBytes / this.bs) + this.spanBlocks,
      onFree: () => this.wakePump() });
    this.servedBits = new Uint8Array(Math.ceil(Math.ceil(img.size / this.bs) / 8)); // 10 KiB per GiB at 128 KiB blocks
    // Readahead must leave most of the cache to the unread rest of blocks fetched for random reads: with half the
    // cache, a boot-like workload fetched 1.1-1.35x its distinct bytes (issue 2; test/source/refetch.test.ts), with a
    // quarter ~1.03x. Through FUSE the kernel's own readahead (8 MiB) keeps sequential reads going anyway.
    const raMax = Math.min(opts.readaheadMaxBytes ?? DEFAULTS.readaheadMaxBytes, Math.floor(cacheBytes / 4));
    this.raMax = raMax;
    // One readahead window of not-yet-read blocks is kept ahead of partly read ones (see cache.ts).
    this.cache = new BlockCache(cacheBytes, (b) => this.pool.release(b), raMax);
    this.readahead = new Readahead({ maxBytes: raMax, initialBytes: Math.min(raMax, Math.max(this.bs, 256 * KiB)) });
    this.servers = new ServerSet(sources, img, {
      order: this.order, nodeId: opts.nodeId ?? hostname(), weights: opts.weights, timeouts: this.timeouts,
      probeIntervalMs: opts.probeIntervalMs ?? DEFAULTS.probeIntervalMs, holdDownMs: opts.holdDownMs ?? DEFAULTS.holdDownMs,
      ioTimeoutMs: this.ioTimeoutMs, log, sizeOnly: this.verifier !== undefined,
      onRecovered: () => { for (const wake of [...this.sleepers]) wake(); }, // retry now rather than after the backoff
    });
  }

  /** Probes every URL concurrently and opens the image; throws a clear Error when no server is usable. */
  static async open(urls: string[], opts: RemoteImageOptions = {}): Promise<RemoteImage> {
    if (!Array.isArray(urls) || urls.length === 0) throw new Error("no image URL given: pass at least one https://host/path URL");
    if (opts.order !== undefined && !ORDERS.includes(opts.order)) {
      throw new Error(`invalid option order=${JSON.stringify(opts.order)}: use one of ${ORDERS.join(", ")}`);
    }
    checkNumber("cacheMb", opts.cacheMb, 0);
    checkNumber("ioTimeoutMs", opts.ioTimeoutMs, 0);
    checkNumber("stallTimeoutMs", opts.stallTimeoutMs, 1);
    checkNumber("requestTimeoutMs", opts.requestTimeoutMs, 1);
    checkNumber("connectTimeoutMs", opts.connectTimeoutMs, 1);
    checkNumber("connectionsPerSource", opts.connectionsPerSource, 1, true);
    checkNumber("maxInFlight", opts.maxInFlight, 1, true);
    checkNumber("readaheadMaxBytes", opts.readaheadMaxBytes, 0);
    checkNumber("probeIntervalMs", opts.probeIntervalMs, 10);
    checkNumber("holdDownMs", opts.holdDownMs, 0);
    checkNumber("blockSize", opts.blockSize, 4096, true);
    checkNumber("maxRequestBytes", opts.maxRequestBytes, 4096, true);
    if (opts.verifier) checkNumber("verifier.chunkSize", opts.verifier.chunkSize, 4096, true);
    const log = opts.log ?? createLogger();

    if (opts.weights !== undefined) {
      if (!Array.isArray(opts.weights) || opts.weights.length !== urls.length) throw new Error(`invalid option weights: give one weight per URL (${urls.length})`);
      opts.weights.forEach((w, i) => checkWeight(w, `invalid option weights[${i}]:`));
    }
    const parsed: ImageUrl[] = [], weights: number[] = [];
    for (const [i, u] of urls.entries()) {
      const p = parseImageUrl(u); // UrlError names the URL and the problem
      if (parsed.some((q) => q.href === p.href)) { log.warn(`ignoring duplicate image URL ${p.href}`); continue; }
      parsed.push(p);
      weights.push(opts.weights?.[i] ?? 1);
    }
    // The image is named after the first URL; servers may store it under other names.
    const name = parsed[0].name;
    for (const p of parsed) {
      if (p.name !== name) log.warn(`${p.href} names the image ${JSON.stringify(p.name)}; using the first URL's name ${JSON.stringify(name)}`);
    }
    const poolOpts: PoolOptions = {
      ca: opts.ca, connections: opts.connectionsPerSource ?? DEFAULTS.connectionsPerSource,
      connectTimeoutMs: opts.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
    };
    const sources = parsed.map((u, i) => new Source(u, directFetcher(u, poolOpts), i));
    const closeAll = () => Promise.all(sources.map((s) => s.fetcher.destroy().catch(() => {})));
    const timeouts = { stallMs: opts.stallTimeoutMs ?? DEFAULTS.stallTimeoutMs, requestMs: opts.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs };

    const results = await Promise.all(sources.map((s) => probeSource(s, timeouts, opts.order === "latency")))
      .catch(async (e) => {
        await closeAll(); // no connection pool outlives a failed open
        throw e;
      });
    const failures: string[] = [];
    results.forEach((res, i) => {
      if (res.ok) return;
      const s = sources[i];
      s.fault(res.reason);
      failures.push(`${s.href}: ${res.reason}`);
      log.error(`error while communicating with ${s.href}: ${res.reason}`);
    });
    // Servers that answered but cannot be used whatever the others say: no validator without a manifest (nothing
    // would tell their file from another), or a size other than the signed manifest's. Excluded, never mixed in.
    const refusals: string[] = [];
    const usable = results.map((res, i): ProbeResult => {
      if (!res.ok) return res;
      const why = res.image.validator === NO_VALIDATOR && !opts.verifier ? NO_VALIDATOR_REFUSAL
        : opts.verifier?.size !== undefined && res.image.size !== opts.verifier.size
          ? `serves ${res.image.size} bytes, but the signed manifest describes ${opts.verifier.size}` : undefined;
      if (!why) return res;
      const s = sources[i];
      s.exclude(why);
      refusals.push(`${s.href}: ${why}`);
      log.error(`excluding ${s.href}: ${why}`);
      return { ok: false, reason: why };
    });
    const agreed = chooseImage(usable);
    if (!agreed) {
      await closeAll();
      // "cannot reach" (a boot waits for servers to come back) only when some server did not answer at all.
      if (failures.length) throw new Error(`cannot reach any image server: ${[...failures, ...refusals].join("; ")}`);
      throw new Error(`no usable image server for ${name}: ${refusals.join("; ")}`);
    }
    const img = agreed.image;
    const okCount = usable.filter((r) => r.ok).length;
    if (agreed.members.length < okCount) log.warn(`image servers disagree about ${name}: ${AGREEMENT_RULE}`);
    usable.forEach((res, i) => {
      if (!res.ok) return;
      const s = sources[i];
      if (agreed.members.includes(i)) { s.state = "healthy"; s.validator = res.image.validator; return; }
      const why = `serves a different image (${res.image.size} bytes, validator ${res.image.validator}) than ` +
        `${agreed.members.length} of ${okCount} reachable servers (${img.size} bytes, validator ${img.validator})`;
      s.exclude(why);
      log.error(`excluding ${s.href}: ${why}`);
    });
    const image = new RemoteImage(sources, img, name, { ...opts, weights }, log);
    image.servers.start();
    return image;
  }

  /**
   * Exactly the bytes [offset, offset+length) clipped to the image size, in a buffer the caller owns.
   * Rejects with IoError (errno 5) only on ioTimeout.
   */
  async read(offset: number, length: number): Promise<Uint8Array> {
    const r = await this.readViews(offset, length);
    try {
      // Always a copy, never a view of a cached block: a caller writing into its buffer must not corrupt the cache.
      const out = Buffer.allocUnsafe(r.views.reduce((n, v) => n + v.length, 0)); // every byte is set below
      let o = 0;
      for (const v of r.views) { out.set(v, o); o += v.length; }
      return out;
    } finally {
      r.release();
    }
  }

  /**
   * The same bytes as read(), without a copy: views of cached blocks, in order, pinned (never recycled for another
   * fetch) until release() is called. Call release() exactly once, as soon as the bytes have been used (a second
   * call does nothing); until then the pool cannot recycle those blocks, so a forgotten release costs memory, never
   * correctness. Never write into the views.
   */
  async readViews(offset: number, length: number): Promise<ImageViews> {
    if (this.closed) throw new Error(`read of ${this.name} after close`);
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new RangeError(`bad read of ${this.name}: offset ${offset}, length ${length}`);
    }
    const end = Math.min(this.size, offset + length);
    if (end <= offset) return { views: [], release: () => {} };
    this.c.readsTotal++;
    this.c.readsInFlight++;
    // The blocks this read obtains stay pinned until release(), or until it fails.
    const work = this.readBlocks(offset, end);
    const unpin = (r: { blocks: Uint8Array[] }) => { for (const b of r.blocks) this.pool.unpin(b); };
    let handedOver = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      let got: { views: Uint8Array[]; blocks: Uint8Array[] };
      if (!this.ioTimeoutMs) got = await work;
      else {
        work.catch(() => {}); // if the timeout wins, a late failure must not be unhandled
        const expired = this.ioExpiredSince > 0;
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            if (!this.ioExpiredSince) this.ioExpiredSince = Date.now();
            reject(new IoError(`I/O error reading ${this.name} bytes ${offset}-${end - 1}: ` + (expired
              ? `no image server has delivered anything for ${secs(Date.now() - this.ioExpiredSince + this.ioTimeoutMs)} (io timeout passed; reads fail at once until a server delivers again)`
              : `no image server delivered them within ${secs(this.ioTimeoutMs)} (io timeout)`)));
          }, expired ? 0 : this.ioTimeoutMs); // a cached block still resolves first: its work settles in microtasks
        });
        got = await Promise.race([work, timeout]);
      }
      handedOver = true;
      let released = false;
      return { views: got.views, release: () => { if (!released) { released = true; unpin(got); } } };
    } finally {
      clearTimeout(timer);
      this.c.readsInFlight--;
      // Timed out: the blocks it still gets are unpinned once the work has settled (a failed one unpinned its own).
      if (!handedOver) work.then(unpin, () => {});
    }
  }

  status(): ImageStatus {
    return {
      name: this.name, size: this.size, validator: this.validator, sources: this.sources.map((s) => s.status()),
      bytesFetched: this.c.bytesFetched, cacheHits: this.c.cacheHits, cacheMisses: this.c.cacheMisses,
      readsInFlight: this.c.readsInFlight, readsTotal: this.c.readsTotal,
      uptimeSec: Math.round((Date.now() - this.started) / 1000), order: this.order,
      coalescedReads: this.c.coalesced, fetches: this.c.fetches, readaheadBytes: this.c.readaheadBytes,
      blockSize: this.bs, cacheBytes: this.cache.bytes, blockBytes: this.pool.stats().owned * this.bs,
    };
  }

  /**
   * Reads have paused: gives back the blocks kept for reuse and the cached blocks the kernel has read in full. After a
   * long pause (`longIdle`) every cached block goes: a node that has booted rarely asks for the unread rest of a block
   * again, and if it does, that is one range request; its RAM is the jobs' (idle after a 1 GiB read: RssAnon ~24 → ~15 MiB).
   */
  releaseIdleMemory(longIdle = false): void {
    this.cache.release(longIdle);
    this.pool.trim();
  }

  /**
   * Untethered (every reader moved to the local copy): down servers are no longer probed every few seconds, so a node
   * whose servers are gone for good stays quiet. A read that still comes is served as before (failover and waits).
   */
  stopFailBackProbes(): void {
    this.servers.stop();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.servers.stop();
    for (const wake of this.sleepers) wake();
    const closedErr = new Error(`image ${this.name} closed`);
    for (const sp of [...this.demandQ, ...this.raQ]) sp.reject(closedErr);
    for (const wake of this.fillQ.splice(0)) wake(); // fillChunks sees `closed` and gives up
    this.demandQ = [];
    this.raQ = [];
    await Promise.all(this.sources.map((s) => s.fetcher.destroy().catch(() => {})));
    this.cache.clear();
    this.pool.clear();
  }

  // ---- read path ----

  /** Views of the bytes [offset, end), and the blocks holding them, pinned for the caller (unpinned if this fails). */
  private async readBlocks(offset: number, end: number): Promise<{ views: Uint8Array[]; blocks: Uint8Array[] }> {
    const ra = this.readahead.observe(offset, end - offset);
    const b0 = Math.floor(offset / this.bs), b1 = Math.floor((end - 1) / this.bs);
    // A readahead fetch that a reader joined is promoted to demand and never dropped; the loop is a safety net.
    for (let attempt = 0; attempt < 100; attempt++) {
      const parts = this.blocks(b0, b1);
      if (ra && attempt === 0) this.prefetch(ra.start, ra.end, b0, b1);
      // Every part settles before we go on: the ones that arrived are pinned and must be unpinned if another failed.
      const settled = await Promise.allSettled(parts);
      const failed = settled.find((r) => r.status === "rejected");
      const blocks = settled.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
      if (failed) {
        for (const b of blocks) this.pool.unpin(b);
        if (failed.reason instanceof Dropped) continue;
        throw failed.reason;
      }
      const views = new Array<Uint8Array>(blocks.length);
      for (let i = 0; i < blocks.length; i++) {
        const blockStart = (b0 + i) * this.bs;
        const from = Math.max(offset, blockStart), to = Math.min(end, blockStart + blocks[i].length);
        views[i] = blocks[i].subarray(from - blockStart, to - blockStart);
        // Bytes handed out now live in the kernel's page cache: a block fully served becomes cheap to evict.
        const whole = from === blockStart && to === blockStart + blocks[i].length;
        if (this.cache.served(b0 + i, from - blockStart, to - blockStart) || whole) this.markServed(b0 + i);
      }
      return { views, blocks };
    }
    throw new Error(`internal: read of ${this.name} at ${offset} kept losing its fetches`);
  }

  /**
   * Blocks b0..b1 (inclusive), from cache, from a fetch in flight, or from new demand fetches, each pinned for the
   * caller: a cached one now, a fetched one by its span as it completes (no gap in which it could be recycled).
   */
  private blocks(b0: number, b1: number): (Uint8Array | Promise<Uint8Array>)[] {
    const res: (Uint8Array | Promise<Uint8Array>)[] = [];
    let runStart = -1;
    const flush = (upTo: number) => {
      if (runStart < 0) return;
      const sp = this.newSpan(runStart, upTo - runStart, "demand");
      for (let b = runStart; b < upTo; b++) res.push(this.join(sp, b));
      runStart = -1;
    };
    for (let b = b0; b <= b1; b++) {
      const cached = this.cache.get(b);
      // Pinned before flush(): the span it starts may shed spent blocks (this one too) and take its blocks from the
      // free list at once, so an unpinned `cached` could already be a fetch's buffer by the time it was pinned.
      if (cached) this.pool.pin(cached);
      const sp = cached ? undefined : this.inflight.get(b);
      if (cached || sp) {
        flush(b);
        if (cached) { this.c.cacheHits++; res.push(cached); }
        else { this.c.coalesced++; this.promote(sp!); res.push(this.join(sp!, b)); }
        continue;
      }
      this.c.cacheMisses++;
      if (runStart < 0) runStart = b;
      else if (b - runStart >= this.spanBlocks) { flush(b); runStart = b; }
    }
    flush(b1 + 1);
    return res;
  }

  /** Reads ahead [start, end) for the read of blocks r0..r1, which is about to consume its own blocks. */
  private prefetch(start: number, end: number, r0: number, r1: number): void {
    // Cap readahead waste: unread readahead (several streams together) stays within one window, so it cannot push
    // partly read blocks, or itself, out of the cache before the reader gets there.
    let unread = this.cache.untouchedSize + this.raPending;
    for (let b = r0; b <= r1; b++) if (this.cache.isUntouched(b)) unread -= this.bs; // being read right now
    const cut = Math.min(end, this.size, start + Math.max(0, this.raMax - unread));
    if (cut < end) this.readahead.shortened(cut);
    end = Math.min(cut, this.size);
    if (end <= start) return;
    const b0 = Math.floor(start / this.bs), b1 = Math.floor((end - 1) / this.bs);
    let runStart = -1;
    const flush = (upTo: number) => {
      if (runStart < 0) return;
      const bytes = Math.min(this.size, upTo * this.bs) - runStart * this.bs;
      this.c.readaheadBytes += bytes;
      this.raPending += bytes;
      this.newSpan(runStart, upTo - runStart, "readahead");
      runStart = -1;
    };
    for (let b = b0; b <= b1; b++) {
      // Served blocks are in the kernel's page cache: it will not ask for them, so fetching them again is waste.
      if (this.cache.has(b) || this.inflight.has(b) || this.wasServed(b)) { flush(b); continue; }
      if (runStart < 0) runStart = b;
      else if (b - runStart >= this.spanBlocks) { flush(b); runStart = b; }
    }
    flush(b1 + 1);
  }

  private markServed(b: number): void { this.servedBits[b >> 3] |= 1 << (b & 7); }
  private wasServed(b: number): boolean { return (this.servedBits[b >> 3] & (1 << (b & 7))) !== 0; }

  /** Block b of a span in flight, pinned by the span for this caller when it completes. */
  private join(sp: Span, b: number): Promise<Uint8Array> {
    sp.joins ??= new Array<number>(sp.count).fill(0);
    sp.joins[b - sp.first]++;
    return sp.promise.then((blocks) => blocks[b - sp.first]);
  }

  // ---- scheduling ----

  private newSpan(first: number, count: number, kind: Kind): Span {
    let resolve!: (b: Uint8Array[]) => void, reject!: (e: unknown) => void;
    const promise = new Promise<Uint8Array[]>((res, rej) => { resolve = res; reject = rej; });
    promise.catch(() => {}); // a dropped readahead nobody waits for is not an unhandled rejection
    const sp: Span = { first, count, kind, started: false, promise, resolve, reject };
    for (let b = first; b < first + count; b++) this.inflight.set(b, sp);
    (kind === "demand" ? this.demandQ : this.raQ).push(sp);
    this.pump();
    return sp;
  }

  /** A reader needs this span: it must not wait behind readahead nor be dropped. */
  private promote(sp: Span): void {
    if (sp.kind === "demand") return;
    sp.kind = "demand";
    this.raPending -= this.spanBytes(sp);
    if (!sp.started) {
      this.raQ = this.raQ.filter((x) => x !== sp);
      this.demandQ.push(sp);
      this.pump();
    }
  }

  private pumpQueued = false;
  /** A block became free: start a span that waited for blocks (not from inside the release that freed it). */
  private wakePump(): void {
    if (this.pumpQueued || (!this.demandQ.length && !this.raQ.length && !this.fillQ.length)) return;
    this.pumpQueued = true;
    queueMicrotask(() => { this.pumpQueued = false; this.pump(); });
  }

  /**
   * Whether the block budget lets `sp` be fetched now. Spent cached blocks (the kernel's page cache holds their bytes)
   * make room first; blocks that still hold unread bytes are never evicted for a fetch. Short of blocks, the span waits
   * for a fetch to end or a read to release its blocks, unless nothing is in flight: then it goes over the budget by
   * one span rather than wait for ever (blocks held by reads waiting on it would never come back).
   */
  private blocksFor(sp: Span): boolean {
    const short = () => sp.count - this.pool.spare();
    if (short() > 0) this.cache.shedSpent(this.cache.bytes - short() * this.bs);
    return short() <= 0 || this.running === 0;
  }

  private pump(): void {
    // Readahead leaves a quarter of the request slots, and of one server's connections, to demand reads, so a demand
    // request never queues behind readahead (in our queue or in the connection pool).
    const quarter = (n: number) => n - Math.max(1, Math.floor(n / 4));
    const raLimit = Math.max(1, Math.min(quarter(this.maxInFlight), quarter(this.connections)));
    while (!this.closed) {
      let sp: Span | undefined;
      if (this.demandQ.length && this.running < this.maxInFlight) { if (this.blocksFor(this.demandQ[0])) sp = this.demandQ.shift(); }
      else if (this.raQ.length && this.running < raLimit) { if (this.blocksFor(this.raQ[0])) sp = this.raQ.shift(); }
      else if (this.fillQ.length && !this.demandQ.length && this.running < raLimit && this.fillRunning < FILL_MAX_IN_FLIGHT &&
        this.blocksFor({ count: this.spanBlocks } as Span)) {
        // Fill last: only with no demand span waiting, within readahead's share of the slots, and within the block
        // budget like any span (spent cached blocks make room; unread ones are never evicted for it).
        this.running++;
        this.fillRunning++;
        this.fillQ.shift()!();
        continue;
      }
      if (!sp) return;
      sp.started = true;
      this.running++;
      void this.runSpan(sp).finally(() => { this.running--; this.pump(); });
    }
  }

  private spanBytes(sp: Span): number {
    return Math.min(this.size, (sp.first + sp.count) * this.bs) - sp.first * this.bs;
  }

  private async runSpan(sp: Span): Promise<void> {
    try {
      const blocks = await this.fetchSpan(sp);
      // Pinned for the reads waiting on them before anything (this cache.set included) can evict and recycle them.
      if (sp.joins) blocks.forEach((bytes, k) => { for (let j = sp.joins![k]; j > 0; j--) this.pool.pin(bytes); });
      if (this.onFetched && this.verifier) blocks.forEach((bytes, k) => this.onFetched!(sp.first + k, bytes));
      blocks.forEach((bytes, k) => this.cache.set(sp.first + k, bytes)); // separate buffers: evicted one by one
      sp.resolve(blocks);
    } catch (e) {
      sp.reject(e);
    } finally {
      if (sp.kind === "readahead") this.raPending -= this.spanBytes(sp); // now cached (untouched) or dropped
      for (let b = sp.first; b < sp.first + sp.count; b++) if (this.inflight.get(b) === sp) this.inflight.delete(b);
    }
  }

  /** Fetches one span with failover; demand spans retry with backoff until data or ioTimeout. */
  private async fetchSpan(sp: Span): Promise<Uint8Array[]> {
    const start = sp.first * this.bs;
    const len = Math.min(this.size, (sp.first + sp.count) * this.bs) - start;
    if (sp.kind !== "fill") {
      const local = this.readLocal(sp.first, sp.count, start, len);
      if (local) return local;
    }
    const t0 = Date.now();
    for (let pass = 0; ; pass++) {
      const tried = new Set<Source>();
      for (;;) {
        if (this.closed) throw new Error(`image ${this.name} closed`);
        // Readahead and fill never wait on a down server; the fill spreads its requests over the healthy ones in turn.
        const src = sp.kind === "fill" ? this.pickFill(tried) : this.servers.pick(tried, sp.kind === "demand");
        if (!src) break;
        tried.add(src);
        this.servers.noteAttempt(src);
        this.c.fetches++;
        const sentAt = Date.now();
        try {
          const r = await src.fetcher.get(start, len, this.timeouts, expectFrom(src, this, this.verifier !== undefined), this.bs, this.pool);
          if (this.verifier) {
            const bad = r.parts.findIndex((bytes, k) => !this.verifier!.verify(sp.first + k, bytes));
            if (bad >= 0) {
              for (const p of r.parts) this.pool.release(p);
              throw new SourceFault(`chunk ${sp.first + bad} failed verification against the signed manifest`);
            }
          }
          this.c.bytesFetched += len;
          if (sp.kind === "fill") this.c.fillBytes += len;
          if (src.state !== "excluded") src.validator ??= r.validator; // a server down at open has now agreed
          this.servers.noteSuccess(src, len, sentAt);
          this.ioExpiredSince = 0; // a real read proved a source good: readers wait again
          return r.parts;
        } catch (e) {
          if (!(e instanceof SourceFault)) throw e;
          if (this.closed) throw new Error(`image ${this.name} closed`);
          this.servers.noteFault(src, e);
        }
      }
      if (sp.kind !== "demand") throw new Dropped(`${sp.kind} dropped`);
      this.servers.noteAllDown();
      const waited = Date.now() - t0;
      if (this.ioTimeoutMs && waited >= this.ioTimeoutMs) {
        throw new IoError(`I/O error reading ${this.name} bytes ${start}-${start + len - 1}: no image server answered for ${secs(waited)}`);
      }
      let delay = jitter(Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(pass, 10)), 0.5);
      if (this.ioTimeoutMs) delay = Math.min(delay, this.ioTimeoutMs - waited);
      await this.sleep(delay);
    }
  }

  /** The span's blocks from the local copy when it holds and verifies every one of them, else undefined. */
  private readLocal(first: number, count: number, start: number, len: number): Uint8Array[] | undefined {
    const local = this.localCopy, v = this.verifier;
    if (!local || !v) return undefined;
    for (let k = 0; k < count; k++) if (!local.holds(first + k)) return undefined;
    const parts: Uint8Array[] = [];
    for (let k = 0; k < count; k++) {
      const b = this.pool.take(Math.min(this.bs, start + len - (first + k) * this.bs));
      parts.push(b);
      if (!local.readInto(first + k, b) || !v.verify(first + k, b)) {
        local.unusable(first + k); // the copy has to get this chunk again
        for (const p of parts) this.pool.release(p);
        return undefined;
      }
    }
    this.c.localBytes += len;
    return parts;
  }

  /** Bytes demand and readahead read from the local copy instead of fetching them. */
  get localBytesRead(): number { return this.c.localBytes; }

  /**
   * Background fill: chunks first..first+count-1 (at most one request's worth), fetched at the lowest priority and
   * verified like every fetch, not cached: the caller owns the returned blocks and must give them back with
   * releaseFillBlocks. The request waits until no demand span is queued, readahead's share of the slots has room, fewer
   * than FILL_MAX_IN_FLIGHT fills run and the block budget has spare blocks. Only usable servers are used, weighted
   * ones before last resort ones, in turn (a bad chunk is a fault of that server and the next one is tried); undefined
   * when none delivered: the caller pauses.
   */
  async fillChunks(first: number, count: number): Promise<Uint8Array[] | undefined> {
    const total = Math.ceil(this.size / this.bs);
    if (!Number.isInteger(first) || !Number.isInteger(count) || first < 0 || count < 1 || count > this.spanBlocks || first + count > total) {
      throw new RangeError(`bad fill of ${this.name}: chunks ${first}+${count} (of ${total}, at most ${this.spanBlocks} at once)`);
    }
    if (this.closed) return undefined;
    await new Promise<void>((resolve) => { this.fillQ.push(resolve); this.pump(); });
    if (this.closed) return undefined; // woken by close(), not given a slot
    const sp: Span = { first, count, kind: "fill", started: true, promise: Promise.resolve([]), resolve() {}, reject() {} };
    try {
      return await this.fetchSpan(sp);
    } catch (e) {
      if (e instanceof Dropped || this.closed) return undefined;
      throw e;
    } finally {
      this.running--;
      this.fillRunning--;
      this.pump();
    }
  }

  /** Gives back the blocks fillChunks returned, once their bytes are written. */
  releaseFillBlocks(blocks: Uint8Array[]): void {
    for (const b of blocks) this.pool.release(b);
  }

  /** Bytes the background fill fetched (included in bytesFetched). */
  get fillBytesFetched(): number { return this.c.fillBytes; }

  /** Chunk (block) size and count, as the fill sees the image. */
  get chunkSize(): number { return this.bs; }

  private pickFill(tried: Set<Source>): Source | undefined {
    // Healthy servers in turn; a degraded one (answers again, failed less than holdDownMs ago) only when none is healthy;
    // a last resort one (weight 0, failover.ts) only when no weighted server is usable.
    const n = this.sources.length;
    for (const reserve of [false, true]) {
      for (const state of ["healthy", "degraded"]) {
        for (let k = 0; k < n; k++) {
          const s = this.sources[(this.fillTurn + k) % n]!;
          if (tried.has(s) || s.state !== state || this.servers.isLastResort(s) !== reserve) continue;
          this.fillTurn = (this.fillTurn + k + 1) % n;
          return s;
        }
      }
    }
    return undefined;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => { clearTimeout(t); this.sleepers.delete(wake); resolve(); };
      const t = setTimeout(wake, Math.max(0, ms));
      this.sleepers.add(wake);
    });
  }
}
