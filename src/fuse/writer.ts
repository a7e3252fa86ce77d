// A writer thread for large reply frames: a Worker that writev(2)s them to /dev/fuse so the main thread does not.
//
// Why: writing a READ reply makes the kernel copy it into the page cache and complete the request, all in the writer's
// context. At full speed that was the main thread's largest item (~0.64 of 1.2 CPU s per GiB, profile of a 1 GiB cold
// read), while the main thread also decrypts TLS. On a thread of its own that copy runs on the other core.
// The data is not copied to get there: the range engine's blocks live in SharedArrayBuffers (src/source/pool.ts), and
// a view of shared memory crosses postMessage as a view of the same memory. Other views are copied (correct, slower).

import { workerErrorText } from "../util/worker-error.ts";

const WORKER_SOURCE = `
const fs = require("node:fs");
let fd = -1;
self.onmessage = (ev) => {
  const m = ev.data;
  if (m.fd !== undefined) { fd = m.fd; return; }
  let err;
  try { fs.writevSync(fd, m.chunks); } catch (e) {
    const code = e && e.code;
    // ENOENT: the request was interrupted meanwhile; ENODEV: the session is over. Neither is worth a report.
    if (code !== "ENOENT" && code !== "ENODEV") err = String(code || (e && e.message));
  }
  postMessage({ id: m.id, err });
};
`;

let workerUrl: string | undefined;

export class FuseWriterThread {
  private readonly worker: Worker;
  private readonly pending = new Map<number, () => void>();
  private nextId = 1;
  private stopped = false;
  /** Resolves when the thread is gone: only then may the fd be closed (its number could be reused). */
  readonly exited: Promise<void>;

  constructor(fd: number, private readonly log: (line: string) => void) {
    workerUrl ??= URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "application/javascript" }));
    this.worker = new Worker(workerUrl);
    this.exited = new Promise((resolve) => this.worker.addEventListener("close", () => resolve()));
    this.worker.onmessage = (m: MessageEvent) => {
      const { id, err } = m.data as { id: number; err?: string };
      if (err) this.log(`FUSE: writing a reply to /dev/fuse failed: ${err}`);
      const done = this.pending.get(id);
      this.pending.delete(id);
      done?.();
    };
    this.worker.onerror = (e: ErrorEvent) => {
      this.log(`FUSE: the reply writer thread crashed: ${workerErrorText(e)}`);
      this.stop();
    };
    this.worker.postMessage({ fd });
  }

  /** Queues one whole reply frame; resolves once the kernel has taken it (or it was dropped), never rejects. */
  write(chunks: Uint8Array[]): Promise<void> {
    if (this.stopped) return Promise.resolve();
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.worker.postMessage({ id, chunks });
    });
  }

  /** Stops the thread; writes still queued are dropped (their callers' promises resolve). */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.worker.terminate();
    for (const done of this.pending.values()) done();
    this.pending.clear();
  }
}
