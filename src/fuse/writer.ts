// Large reply frames (READ data) are written off the main thread: writev(2) on Bun's file-I/O thread pool.
//
// Why off the main thread: writing a READ reply makes the kernel copy it into the page cache and complete the request,
// all in the writer's context. At full speed that was the main thread's largest item (~0.64 of 1.2 CPU s per GiB,
// profile of a 1 GiB cold read). The data is not copied to get there: the range engine's blocks live in
// SharedArrayBuffers (src/source/pool.ts) and the pool thread writes the views in place.
//
// Why Bun's pool and not a Worker of our own (the first version): compiled daemon, 1 GiB cold read, alternating runs:
// same or slightly more MB/s (make bench: 923/970 vs 908/823 MB/s at 0 ms, 701/719 vs 663/673 at 2 ms), ~0.15 vs
// ~0.2 CPU s/GiB for the writes, 2-4 MiB less RSS (no second JS heap) and no message per reply. A write to
// /dev/fuse waits for nothing but that copy, so it never parks a pool thread (a read of /dev/fuse would: reader.ts).
// The rule this adds: the process serving a mount must not read that mount with Bun's async fs, whose reads would
// hold the pool threads the replies need (the daemon does no async fs at all; tests read mounts from other processes).
import { writev } from "node:fs";

export class FuseReplyWriter {
  private inFlight = 0;
  private stopped = false;
  private drainedWaiters: (() => void)[] = [];

  constructor(private readonly fd: number, private readonly log: (line: string) => void) {}

  /** Queues one whole reply frame; resolves once the kernel has taken it (or it was dropped), never rejects. */
  write(chunks: Uint8Array[]): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.inFlight++;
    return new Promise((resolve) => {
      writev(this.fd, chunks, (err) => {
        const code = (err as NodeJS.ErrnoException | null)?.code;
        // ENOENT: the request was interrupted meanwhile; ENODEV: the session is over. Neither is worth a report.
        if (err && code !== "ENOENT" && code !== "ENODEV") this.log(`FUSE: writing a reply to /dev/fuse failed: ${code ?? err.message}`);
        resolve();
        if (--this.inFlight === 0) for (const w of this.drainedWaiters.splice(0)) w();
      });
    });
  }

  /** Takes no more writes (their callers' promises resolve at once). */
  stop(): void { this.stopped = true; }

  /** Resolves once no write is under way: only then may the fd be closed (its number could be reused). */
  drained(): Promise<void> {
    return this.inFlight === 0 ? Promise.resolve() : new Promise((r) => this.drainedWaiters.push(r));
  }
}
