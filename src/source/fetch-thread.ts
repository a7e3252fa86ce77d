// A thread of its own for HTTPS: TLS decryption, HTTP parsing and the copy into blocks run beside the main thread,
// which keeps the engine's bookkeeping and the FUSE session.
//
// Why: at full speed the main thread was the bottleneck, and TLS was its largest part; a second core sat partly idle.
// The socket layer also allocates a fresh buffer per chunk received (Bun has no read-into-my-buffer path), so garbage
// arrives at line rate: in this thread's small heap it is cheap to collect, and the main thread's heap stays quiet.
// Blocks are SharedArrayBuffer views (src/source/pool.ts), filled in place: no data crosses postMessage.
import type { ImageUrl } from "./url";
import { isCompiledBinary } from "../util/self";
import { workerErrorText } from "../util/worker-error";
import { SourceFault, takePieces, type Expect, type PieceAllocator, type PoolOptions, type RangeFetcher, type RangeReply,
  type RangeTimeouts } from "./http";

export type FetchRequest =
  | { t: "init"; urls: ImageUrl[]; pool: PoolOptions }
  | { t: "get"; id: number; src: number; start: number; length: number; timeouts: RangeTimeouts; expect?: Expect;
      pieceSize: number; parts?: Uint8Array[] }
  | { t: "idle" }
  | { t: "destroy"; id: number };

export type FetchResponse =
  | { t: "ok"; id: number; size: number; validator: string; lastModifiedMs?: number; order?: number[]; data?: Uint8Array[] }
  | { t: "fault"; id: number; reason: string; imageChanged: boolean; internal: boolean }
  | { t: "destroyed"; id: number };

const isShared = (p: Uint8Array) => p.buffer instanceof SharedArrayBuffer;

// In the executable, a Worker entry point is named relative to the entry points' common directory (src/), as
// build.ts lists it; from the source tree it is a file next to this one.
const workerSpecifier = () => (isCompiledBinary() ? "./source/fetch-worker.ts" : new URL("./fetch-worker.ts", import.meta.url).href);

export class FetchThread {
  private worker?: Worker;
  private readonly pending = new Map<number, (r: FetchResponse) => void>();
  private nextId = 1;
  private closed = false;

  constructor(private readonly urls: ImageUrl[], private readonly pool: PoolOptions, private readonly log: (line: string) => void) {}

  /** The fetcher for urls[i]: the same contract as directFetcher, executed on the fetch thread. */
  fetcher(i: number): RangeFetcher {
    return {
      get: (start, length, t, expect, pieceSize = length, alloc) => this.get(i, start, length, t, expect, pieceSize, alloc),
      destroy: async () => {}, // the thread's pools go with the thread (close)
    };
  }

  /** Reads have paused: the thread collects its garbage and hands free memory back (as the main thread does). */
  idle(): void {
    this.worker?.postMessage({ t: "idle" } satisfies FetchRequest);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const w = this.worker;
    if (!w) return;
    const id = this.nextId++;
    const done = new Promise<void>((resolve) => this.pending.set(id, () => resolve()));
    w.postMessage({ t: "destroy", id } satisfies FetchRequest);
    await Promise.race([done, new Promise((r) => setTimeout(r, 2000))]);
    this.stopWorker("fetch thread closed");
  }

  private start(): Worker {
    const w = new Worker(workerSpecifier());
    w.onmessage = (ev: MessageEvent<FetchResponse>) => {
      const done = this.pending.get(ev.data.id);
      this.pending.delete(ev.data.id);
      done?.(ev.data);
    };
    w.onerror = (e: ErrorEvent) => {
      // Requests in flight become source faults (the engine retries them); the next request starts a new thread.
      const why = workerErrorText(e);
      this.log(`fetch thread crashed (${why}); starting a new one`);
      this.stopWorker(`fetch thread crashed: ${why}`);
    };
    w.postMessage({ t: "init", urls: this.urls, pool: this.pool } satisfies FetchRequest);
    this.worker = w;
    return w;
  }

  private stopWorker(reason: string): void {
    const w = this.worker;
    this.worker = undefined;
    w?.terminate();
    for (const done of this.pending.values()) done({ t: "fault", id: 0, reason, imageChanged: false, internal: false });
    this.pending.clear();
  }

  private async get(src: number, start: number, length: number, timeouts: RangeTimeouts, expect: Expect | undefined,
    pieceSize: number, alloc: PieceAllocator | undefined): Promise<RangeReply> {
    if (this.closed) throw new SourceFault("connection pool closed");
    const w = this.worker ?? this.start();
    // Blocks are taken here, in the thread that owns the pool; shared ones are filled in place by the fetch thread.
    let parts: Uint8Array[] | undefined;
    if (alloc) {
      parts = takePieces(length, pieceSize, alloc);
      if (!parts.every(isShared)) { for (const p of parts) alloc.release(p); parts = undefined; } // cannot be shared: copy back
    }
    const id = this.nextId++;
    const r = await new Promise<FetchResponse>((resolve) => {
      this.pending.set(id, resolve);
      w.postMessage({ t: "get", id, src, start, length, timeouts, expect, pieceSize, parts } satisfies FetchRequest);
    });
    if (r.t !== "ok") {
      if (parts) for (const p of parts) alloc!.release(p);
      if (r.t === "fault" && r.internal) throw new Error(`fetch thread: ${r.reason}`);
      throw new SourceFault(r.t === "fault" ? r.reason : "fetch thread: unexpected reply", r.t === "fault" && r.imageChanged);
    }
    let out: Uint8Array[];
    if (parts) out = r.order!.map((k) => parts![k]);
    else if (alloc) { // unshared blocks: copy what the thread sent back into the caller's own
      out = r.data!.map((d) => { const p = alloc.take(d.length); p.set(d); return p; });
    } else out = r.data!;
    return { parts: out, size: r.size, validator: r.validator, lastModifiedMs: r.lastModifiedMs };
  }
}
