// The reader of /dev/fuse: one read(2) at a time, parked on Bun's file-I/O thread pool until the kernel has a request.
//
// Why not a Worker blocking in readSync (the first version): a Worker is a second JS VM, ~6 MiB of VmRSS (2.7 MiB
// private) for a loop around read(2). Measured on the compiled daemon, 1 GiB cold read, alternating runs: idle VmRSS
// 55-56 → 51 MiB, peak 76-77 → 72-73 MiB, same MB/s.
// Why exactly one read: a read of /dev/fuse blocks until the kernel has a request, and Bun's pool has max(CPUs, 2)
// threads; two parked reads on a 2-core machine starve every other async operation that needs the pool (measured: an
// fs.promises.writeFile then never completes). Replies do not need it (mount.ts writes them on the main thread), and
// one reader is enough: replies are asynchronous, so a single read keeps the kernel's 64 background requests in flight.
import { read } from "node:fs";

export interface ReaderEvents {
  onFrame(frame: Uint8Array): void;
  /** The kernel ended the session (ENODEV: unmounted or aborted) or read() failed for good. */
  onEnd(reason: string, error?: Error): void;
}

/** Transient read errors: the request was interrupted before we got it (ENOENT), or a signal (EINTR, EAGAIN). */
const RETRY = new Set(["ENOENT", "EINTR", "EAGAIN"]);

export class FuseReader {
  private stopped = false;
  private pausing = false;
  private parked = false;
  /** Resolves when no read is parked any more: only then may the fd be closed (its number could be reused). */
  readonly exited: Promise<void>;

  constructor(fd: number, bufSize: number, ev: ReaderEvents) {
    let resolveExited!: () => void;
    this.exited = new Promise((r) => (resolveExited = r));
    const buf = Buffer.allocUnsafe(bufSize);
    let retries = 0;
    const end = (reason: string, error?: Error) => {
      resolveExited();
      if (this.stopped) return;
      this.stopped = true;
      ev.onEnd(reason, error);
    };
    const next = () => {
      this.parked = true;
      read(fd, buf, 0, bufSize, null, (err, n) => {
        this.parked = false;
        if (this.stopped) return end("stopped");
        if (err) {
          const code = (err as NodeJS.ErrnoException).code ?? "";
          if (RETRY.has(code) && ++retries < 100_000) return next();
          if (code === "ENODEV") return end("ENODEV");
          return end(`read error ${code}`, Object.assign(new Error(`reading /dev/fuse (fd ${fd}) failed: ${code} (${err.message})`), { code }));
        }
        retries = 0;
        if (n === 0) return end("EOF");
        // A copy: the next read into `buf` starts at once, on another thread.
        const frame = new Uint8Array(n);
        frame.set(buf.subarray(0, n));
        if (this.pausing) {
          // Handing over: the request this read took is still ours to answer, but no further read is made.
          this.stopped = true;
          resolveExited();
          ev.onFrame(frame);
          return;
        }
        next();
        ev.onFrame(frame);
      });
    };
    next();
  }

  /**
   * Stops reading without losing a request: the read still parked delivers its frame (onFrame) and no other read is
   * made; `exited` resolves then. The caller makes the kernel send something (any request) if it must not wait.
   */
  pause(): void {
    this.pausing = true;
  }

  /** True while a read of /dev/fuse is waiting in the kernel. */
  get reading(): boolean {
    return this.parked && !this.stopped;
  }

  /** Stops reading. A read still parked returns when the kernel ends the session (ENODEV at unmount). */
  stop(): void {
    this.stopped = true;
  }
}
