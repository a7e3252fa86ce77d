// Reader threads: Workers that block in read(2) on /dev/fuse and post each request frame to the main thread.
//
// Why a Worker: Bun's async fs.read runs on a small shared thread pool (2 threads on a 2-core machine). A read of
// /dev/fuse blocks until the kernel has a request, so parking async reads there starves every other async file
// operation in the process (measured: with 2 such reads pending, fs.promises.readFile never completes). A Worker
// blocking in readSync costs one thread of its own and nothing else. The worker source is inlined and loaded
// from a Blob URL so `bun build --compile` needs no extra entry point (checked in a baseline-target binary).
// Measured: the first reader costs ~11 MB RSS, each further one ~2 MB; one reader already keeps 64 requests in
// flight (80 parallel O_DIRECT readers → 64 = max_background) because replies are asynchronous, not the reads.

import { workerErrorText } from "../util/worker-error.ts";

const WORKER_SOURCE = `
const fs = require("node:fs");
self.onmessage = (ev) => {
  const { fd, bufSize } = ev.data;
  const buf = Buffer.allocUnsafe(bufSize);
  let retries = 0;
  for (;;) {
    let n;
    try {
      n = fs.readSync(fd, buf, 0, bufSize, null);
      retries = 0;
    } catch (e) {
      const code = e && e.code;
      // ENOENT: the request was interrupted before we got it; EINTR/EAGAIN: try again.
      if ((code === "ENOENT" || code === "EINTR" || code === "EAGAIN") && ++retries < 100000) continue;
      if (code === "ENODEV") { postMessage({ t: "end", reason: "ENODEV" }); return; }
      postMessage({ t: "error", code: String(code), message: String(e && e.message) });
      return;
    }
    if (n === 0) { postMessage({ t: "end", reason: "EOF" }); return; }
    const out = buf.buffer.slice(buf.byteOffset, buf.byteOffset + n);
    postMessage({ t: "frame", data: out }, [out]);
  }
};
`;

let workerUrl: string | undefined;

export interface ReaderEvents {
  onFrame(frame: Uint8Array): void;
  /** The kernel ended the session (ENODEV: unmounted or aborted) or read() failed for good. */
  onEnd(reason: string, error?: Error): void;
}

/** One blocking reader of a /dev/fuse fd. Several may read the same fd; each read returns one whole request. */
export class FuseReader {
  private readonly worker: Worker;
  private done = false;
  /** Resolves when the thread is gone: only then may the fd be closed (its number could be reused). */
  readonly exited: Promise<void>;

  constructor(fd: number, bufSize: number, ev: ReaderEvents) {
    workerUrl ??= URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "application/javascript" }));
    this.worker = new Worker(workerUrl);
    this.exited = new Promise((resolve) => this.worker.addEventListener("close", () => resolve()));
    this.worker.onmessage = (m: MessageEvent) => {
      const d = m.data as { t: string; data?: ArrayBuffer; reason?: string; code?: string; message?: string };
      if (d.t === "frame") ev.onFrame(new Uint8Array(d.data!));
      else if (!this.done) {
        this.done = true;
        if (d.t === "end") ev.onEnd(d.reason ?? "end");
        else {
          const err = Object.assign(new Error(`reading /dev/fuse (fd ${fd}) failed: ${d.code} (${d.message})`),
                                    { code: d.code });
          ev.onEnd(`read error ${d.code}`, err);
        }
      }
    };
    this.worker.onerror = (e: ErrorEvent) => {
      if (this.done) return;
      this.done = true;
      ev.onEnd("reader worker crashed", new Error(`FUSE reader worker crashed: ${workerErrorText(e)}`));
    };
    this.worker.postMessage({ fd, bufSize });
  }

  /** Stops the thread. One still blocked in read(2) stays blocked until the kernel returns (ENODEV at unmount). */
  stop(): void {
    this.done = true;
    this.worker.terminate();
  }
}
