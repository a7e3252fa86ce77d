// Background fill: copies every chunk of the mounted image into a local copy (a file, e.g. on tmpfs, or a block
// device), verified against the signed manifest, at the lowest priority, so that the node can later be untethered.
//
// Priority and pacing: each request goes through RemoteImage.fillChunks, which starts it only when no demand span is
// queued, at most 2 fill requests run, readahead's share of the request slots has room and the block budget allows
// (so the fill adds no memory beyond the engine's budget); it uses healthy servers only, in turn. An optional rate cap
// (`rateBytesPerSec`) spaces the requests. When no healthy server delivers, the fill pauses (1 s doubling to 10 s) and
// goes on where it was: nothing is lost, the cursor and the bitmap stay.
//
// Trust: one bit per chunk, set only once its bytes, verified by the engine against the manifest, have been written
// with pwrite in full. Nothing on the target is trusted otherwise: a daemon started later (after a crash, by the
// holder) re-reads the existing copy and keeps only the chunks the manifest vouches for. Chunks that demand reads
// fetched are written too (RemoteImage.onFetched), so nothing is fetched twice.
import { closeSync, constants, existsSync, fstatSync, ftruncateSync, fsyncSync, openSync, readSync, statSync, writeSync } from "node:fs";
import type { RemoteImage } from "../source/image";
import { blockDeviceBytes } from "../sys/blockdev";
import type { Logger } from "../util/log";

const MiB = 1048576;
const PAUSE_MIN_MS = 1000, PAUSE_MAX_MS = 10_000;
/** Rate and ETA are measured over this window. */
const RATE_WINDOW_MS = 10_000;

export type FillState = "checking" | "filling" | "paused" | "complete" | "failed";

export interface FillStatus {
  path: string;
  state: FillState;
  reason?: string;        // why paused or failed
  size: number;           // image bytes
  chunkSize: number;
  chunks: number;
  chunksDone: number;
  filledBytes: number;    // verified bytes in the local copy
  fetchedBytes: number;   // bytes the fill itself fetched (demand reads' chunks come free)
  reusedBytes: number;    // verified bytes found already in the copy at start (a previous daemon's)
  /** Bytes reads through the mount got from the copy instead of a server (optional: older daemons lack it). */
  readFromCopyBytes?: number;
  rateBytesPerSec: number;
  etaSec?: number;
  rateCapBytesPerSec?: number;
  startedAt: string;
  completedAt?: string;
}

export interface FillOptions {
  /** A regular file (created, sized to the image) or a block device at least as large as the image. */
  path: string;
  /** The manifest's check of a chunk, for the copy a previous daemon left. */
  check(index: number, bytes: Uint8Array): boolean;
  rateBytesPerSec?: number;
  log: Logger;
  /** Called once when every chunk is in the copy (after fsync). */
  onComplete?: () => void;
}

/** Bytes of a block device (sysfs: 512-byte sectors), or undefined for anything else. */
function blockDeviceSize(path: string): number | undefined {
  if (!existsSync(path) || !statSync(path).isBlockDevice()) return undefined;
  return blockDeviceBytes(path);
}

export class ImageFill {
  private readonly chunks: number;
  private readonly bs: number;
  private readonly per: number;           // chunks per request
  private readonly done: Uint8Array;      // one bit per chunk: written and verified
  private readonly claimed: Uint8Array;   // one bit per chunk: a fill request is fetching it
  private doneCount = 0;
  private fd = -1;
  private cursor = 0;
  private state: FillState = "checking";
  private reason?: string;
  private fetched = 0;
  private reused = 0;
  private nextSendAt = 0;
  private stopped = false;
  private wakers = new Set<() => void>();
  private samples: { t: number; bytes: number }[] = [];
  private readonly startedAt = new Date().toISOString();
  private completedAt?: string;
  /** Resolves when the copy is complete (never, if stopped first). */
  readonly complete: Promise<void>;
  private resolveComplete!: () => void;

  constructor(private readonly image: RemoteImage, private readonly o: FillOptions) {
    if (o.rateBytesPerSec !== undefined && !(o.rateBytesPerSec > 0)) throw new Error(`fill rate must be > 0 (got ${o.rateBytesPerSec})`);
    this.bs = image.chunkSize;
    this.chunks = Math.ceil(image.size / this.bs);
    this.per = Math.max(1, Math.floor(MiB / this.bs));
    this.done = new Uint8Array(Math.ceil(this.chunks / 8));
    this.claimed = new Uint8Array(Math.ceil(this.chunks / 8));
    this.complete = new Promise((r) => (this.resolveComplete = r));
  }

  /** Opens (or creates) the target, keeps what a previous daemon verified, then fills the rest in the background. */
  async start(): Promise<void> {
    try { await this.open(); } catch (e) { this.fail(e as Error); }
  }

  private async open(): Promise<void> {
    const { path, log } = this.o;
    const devSize = blockDeviceSize(path);
    let existed = devSize !== undefined;
    if (devSize === undefined) {
      try { existed = statSync(path).size === this.image.size; } catch { existed = false; }
      this.fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o600);
      if (fstatSync(this.fd).size !== this.image.size) {
        ftruncateSync(this.fd, this.image.size);
      }
    } else {
      if (devSize < this.image.size) throw new Error(`--fill ${path}: the device has ${devSize} bytes, the image ${this.image.size}`);
      this.fd = openSync(path, constants.O_RDWR);
    }
    // Chunks demand reads bring are kept from now on (even while the old copy is being checked), and chunks the copy
    // holds are read from it instead of fetched again (before the loop device is switched, the boot still reads
    // through the mount: without this, every chunk the fill got first would cross the network twice).
    this.image.onFetched = (i, bytes) => this.keep(i, bytes, false);
    this.image.localCopy = {
      holds: (i) => !this.stopped && this.fd >= 0 && this.isDone(i),
      readInto: (i, into) => this.readChunk(i, into),
      unusable: (i) => this.forget(i),
    };
    if (existed) await this.recheck();
    log.info(`fill of ${path}: ${this.doneCount}/${this.chunks} chunks already verified` +
      (this.o.rateBytesPerSec ? `, rate cap ${(this.o.rateBytesPerSec / MiB).toFixed(1)} MiB/s` : ""));
    this.state = "filling";
    this.sample();
    if (this.finishIfDone()) return;
    for (let w = 0; w < 2; w++) void this.worker().catch((e) => this.fail(e as Error));
  }

  stop(): void {
    this.stopped = true;
    if (this.image.onFetched) this.image.onFetched = undefined;
    this.image.localCopy = undefined;
    for (const wake of [...this.wakers]) wake();
    if (this.fd >= 0) { try { closeSync(this.fd); } catch {} this.fd = -1; }
  }

  isComplete(): boolean { return this.doneCount === this.chunks; }

  status(): FillStatus {
    this.sample();
    const first = this.samples[0]!, last = this.samples[this.samples.length - 1]!;
    const rate = last.t > first.t ? ((last.bytes - first.bytes) * 1000) / (last.t - first.t) : 0;
    const filled = this.filledBytes();
    const left = this.image.size - filled;
    return {
      path: this.o.path, state: this.state, reason: this.reason, size: this.image.size, chunkSize: this.bs, chunks: this.chunks,
      chunksDone: this.doneCount, filledBytes: filled, fetchedBytes: this.fetched, reusedBytes: this.reused,
      readFromCopyBytes: this.image.localBytesRead,
      rateBytesPerSec: Math.round(rate), etaSec: left === 0 ? 0 : rate > 0 && this.state !== "paused" ? Math.ceil(left / rate) : undefined,
      rateCapBytesPerSec: this.o.rateBytesPerSec, startedAt: this.startedAt, completedAt: this.completedAt,
    };
  }

  // ---- internals ----

  private chunkLen(i: number): number { return Math.min(this.bs, this.image.size - i * this.bs); }
  private isDone(i: number): boolean { return (this.done[i >> 3]! & (1 << (i & 7))) !== 0; }
  private isClaimed(i: number): boolean { return (this.claimed[i >> 3]! & (1 << (i & 7))) !== 0; }
  private setClaimed(i: number, on: boolean): void {
    if (on) this.claimed[i >> 3]! |= 1 << (i & 7); else this.claimed[i >> 3]! &= ~(1 << (i & 7));
  }
  private filledBytes(): number {
    const lastDone = this.chunks > 0 && this.isDone(this.chunks - 1);
    return this.doneCount * this.bs - (lastDone ? this.bs - this.chunkLen(this.chunks - 1) : 0);
  }

  private sample(): void {
    const t = performance.now();
    this.samples.push({ t, bytes: this.filledBytes() });
    while (this.samples.length > 2 && t - this.samples[1]!.t >= RATE_WINDOW_MS) this.samples.shift();
    if (this.samples.length > 64) this.samples.splice(1, this.samples.length - 32);
  }

  /** Writes one verified chunk to the copy; only then is it marked done. */
  private keep(i: number, bytes: Uint8Array, fromFill: boolean): void {
    if (this.stopped || this.fd < 0 || i < 0 || i >= this.chunks || this.isDone(i)) return;
    const len = this.chunkLen(i);
    if (bytes.length < len) return; // not a whole chunk: never trusted
    let off = 0;
    while (off < len) off += writeSync(this.fd, bytes, off, len - off, i * this.bs + off);
    this.done[i >> 3]! |= 1 << (i & 7);
    this.doneCount++;
    if (fromFill) this.fetched += len;
    if (!fromFill && this.state !== "checking") this.finishIfDone();
  }

  /** Chunk i of the copy into `into` (its length); false when the copy cannot give it whole. */
  private readChunk(i: number, into: Uint8Array): boolean {
    if (this.fd < 0 || into.length !== this.chunkLen(i)) return false;
    let got = 0;
    try {
      while (got < into.length) {
        const n = readSync(this.fd, into, got, into.length - got, i * this.bs + got);
        if (n <= 0) return false;
        got += n;
      }
    } catch { return false; }
    return true;
  }

  /** A chunk of the copy that no longer verifies (the local disk changed it): fetched and written again. */
  private forget(i: number): void {
    if (!this.isDone(i)) return;
    this.done[i >> 3]! &= ~(1 << (i & 7));
    this.doneCount--;
    this.o.log.error(`fill of ${this.o.path}: chunk ${i} of the local copy no longer matches the signed manifest; fetching it again`);
    if (this.state === "complete" && !this.stopped) {
      this.state = "filling";
      void this.worker().catch((e) => this.fail(e as Error));
    }
  }

  /** A previous daemon's copy: keep each chunk the manifest vouches for (yielding now and then to keep serving). */
  private async recheck(): Promise<void> {
    const buf = Buffer.allocUnsafe(this.bs);
    for (let i = 0; i < this.chunks && !this.stopped; i++) {
      if (this.isDone(i)) continue;
      const len = this.chunkLen(i);
      let got = 0;
      while (got < len) {
        const n = readSync(this.fd, buf, got, len - got, i * this.bs + got);
        if (n <= 0) break;
        got += n;
      }
      if (got === len && this.o.check(i, buf.subarray(0, len)) && !this.isDone(i)) {
        this.done[i >> 3]! |= 1 << (i & 7);
        this.doneCount++;
        this.reused += len;
      }
      if (i % 64 === 63) await new Promise((r) => setImmediate(r));
    }
  }

  /** The next run of chunks neither done nor claimed, from the cursor on (wrapping once). */
  private claim(): { first: number; count: number } | undefined {
    for (let pass = 0; pass < 2; pass++) {
      for (let i = pass === 0 ? this.cursor : 0; i < this.chunks; i++) {
        if (this.isDone(i) || this.isClaimed(i)) continue;
        let count = 1;
        while (count < this.per && i + count < this.chunks && !this.isDone(i + count) && !this.isClaimed(i + count)) count++;
        for (let k = 0; k < count; k++) this.setClaimed(i + k, true);
        this.cursor = i + count;
        return { first: i, count };
      }
    }
    return undefined;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => { clearTimeout(t); this.wakers.delete(wake); resolve(); };
      const t = setTimeout(wake, Math.max(0, ms));
      this.wakers.add(wake);
    });
  }

  private async worker(): Promise<void> {
    let pauseMs = PAUSE_MIN_MS;
    while (!this.stopped) {
      const run = this.claim();
      if (!run) return; // the rest is claimed by the other worker, or all done
      try {
        const bytes = Math.min(this.image.size, (run.first + run.count) * this.bs) - run.first * this.bs;
        if (this.o.rateBytesPerSec) {
          const now = performance.now();
          const at = Math.max(now, this.nextSendAt);
          this.nextSendAt = at + (bytes * 1000) / this.o.rateBytesPerSec;
          if (at > now) await this.sleep(at - now);
          if (this.stopped) return;
        }
        const parts = await this.image.fillChunks(run.first, run.count);
        if (!parts) {
          if (this.stopped) return;
          if (this.state !== "paused") this.o.log.warn(`fill of ${this.o.path} paused: no healthy image server; resuming when one answers`);
          this.state = "paused";
          this.reason = "no healthy image server";
          this.cursor = Math.min(this.cursor, run.first);
          await this.sleep(pauseMs);
          pauseMs = Math.min(PAUSE_MAX_MS, pauseMs * 2);
          continue;
        }
        if (this.state === "paused") this.o.log.info(`fill of ${this.o.path} resumed`);
        this.state = "filling";
        this.reason = undefined;
        pauseMs = PAUSE_MIN_MS;
        try {
          parts.forEach((p, k) => this.keep(run.first + k, p, true));
        } finally {
          this.image.releaseFillBlocks(parts);
        }
      } finally {
        for (let k = 0; k < run.count; k++) this.setClaimed(run.first + k, false);
      }
      if (this.finishIfDone()) return;
    }
  }

  private finishIfDone(): boolean {
    if (this.doneCount !== this.chunks || this.state === "complete" || this.state === "failed") return this.doneCount === this.chunks;
    try { fsyncSync(this.fd); } catch (e) { this.fail(e as Error); return true; }
    this.state = "complete";
    this.completedAt = new Date().toISOString();
    this.image.onFetched = undefined;
    this.sample();
    const st = this.status();
    this.o.log.info(`fill of ${this.o.path} complete: ${this.image.size} bytes verified, ${(st.fetchedBytes / MiB).toFixed(1)} MiB fetched by the fill`);
    this.resolveComplete();
    this.o.onComplete?.();
    return true;
  }

  private fail(e: Error): void {
    if (this.state === "failed") return;
    this.state = "failed";
    this.reason = e.message;
    this.o.log.error(`fill of ${this.o.path} failed: ${e.message}`);
    this.stop();
  }
}
