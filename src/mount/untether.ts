// Untethering: once the fill's local copy is complete, the loop device that reads the image through the FUSE mount is
// switched to that copy (LOOP_CHANGE_FD, src/sys/loop.ts), so the node needs no image server any more.
//
// Who switches: the mount daemon. It is the one that knows when the copy is complete and verified, and it is the one
// that must keep serving FUSE reads during the switch (the kernel freezes the loop device's queue until the reads in
// flight on the old file end, and those are FUSE reads). It does not need to be told which loop device: every loop
// device whose backing file is the file this mount exposes (/sys/block/loopN/loop/backing_file, read from sysfs, so
// nothing is asked of the FUSE file) is switched, as soon as the copy is complete and again whenever a new one shows
// up (checked every few seconds), so init may attach the loop device before or after starting the fill.
// `--untether-loop /dev/loopN` names one device instead (switched even if its backing path reads differently, e.g.
// across a switch_root), `--untether-loop off` keeps the copy without switching. The ioctl itself runs in a short-lived
// child process of this binary (`airroot mount --switch-loop DEV --fill PATH`): on the daemon's own thread it would
// wait for reads only that thread can serve.
import type { Logger } from "../util/log";
import { loopBackingFiles } from "../sys/loop";

const SCAN_EVERY_MS = 5000;
const SWITCH_TIMEOUT_MS = 120_000;

export interface UntetheredLoop { dev: string; at: string; directIo: boolean; note?: string }

export interface UntetherOptions {
  /** "auto" (every loop device backed by `exposedPath`), "off", or a /dev/loopN. */
  loop: string;
  exposedPath: string;
  copyPath: string;
  /** argv that runs this binary. */
  self: string[];
  log: Logger;
  /** Called after each loop device moved to the copy. */
  onSwitched?: (dev: string) => void;
}

export class Untether {
  private readonly switched: UntetheredLoop[] = [];
  private timer?: ReturnType<typeof setInterval>;
  private busy = false;
  private lastError?: string;

  constructor(private readonly o: UntetherOptions) {}

  /** Starts switching (call once the copy is complete). */
  start(): void {
    if (this.o.loop === "off" || this.timer) return;
    void this.scan();
    this.timer = setInterval(() => void this.scan(), SCAN_EVERY_MS);
    this.timer.unref();
  }

  stop(): void { clearInterval(this.timer); }

  status(): { loops: UntetheredLoop[]; error?: string; mode: string } {
    return { loops: [...this.switched], error: this.lastError, mode: this.o.loop };
  }

  private candidates(): string[] {
    const all = loopBackingFiles();
    if (this.o.loop !== "auto") {
      const dev = this.o.loop;
      if (this.switched.some((s) => s.dev === dev)) return [];
      const now = all.find((l) => l.dev === dev);
      if (!now) return [];                               // not attached (yet)
      if (now.file === this.o.copyPath) return [];        // already on the copy
      return [dev];
    }
    return all.filter((l) => l.file === this.o.exposedPath && !this.switched.some((s) => s.dev === l.dev)).map((l) => l.dev);
  }

  private async scan(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      for (const dev of this.candidates()) await this.switchOne(dev);
      if (this.o.loop !== "auto" && this.switched.length) this.stop(); // the one named device is done
    } finally {
      this.busy = false;
    }
  }

  private async switchOne(dev: string): Promise<void> {
    const t0 = performance.now();
    const proc = Bun.spawn([...this.o.self, "mount", "--switch-loop", dev, "--fill", this.o.copyPath], {
      stdin: "ignore", stdout: "pipe", stderr: "pipe", timeout: SWITCH_TIMEOUT_MS, killSignal: "SIGKILL",
    });
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    if (code !== 0) {
      const why = (err.trim().split("\n").pop() || `exit ${code}`).slice(0, 300);
      if (this.lastError !== why) this.o.log.error(`untether ${dev}: ${why}`);
      this.lastError = why;
      return;
    }
    let r: { directIo?: boolean; directIoError?: string } = {};
    try { r = JSON.parse(out.trim().split("\n").pop() ?? "{}"); } catch { /* an older binary: switched, no details */ }
    this.lastError = undefined;
    this.switched.push({ dev, at: new Date().toISOString(), directIo: !!r.directIo, note: r.directIoError });
    this.o.log.info(`untethered: ${dev} now reads ${this.o.copyPath} (LOOP_CHANGE_FD in ${(performance.now() - t0).toFixed(0)} ms; ` +
      (r.directIo ? "direct I/O" : `buffered: ${r.directIoError ?? "direct I/O refused"}`) + "); it needs no image server any more");
    this.o.onSwitched?.(dev);
  }
}

/** The child's side: switch `dev` to `copy` and print the result as one JSON line. */
export async function runSwitchLoop(dev: string, copy: string): Promise<void> {
  const { statSync } = await import("node:fs");
  const { changeLoopFile } = await import("../sys/loop");
  const { blockDeviceBytes } = await import("../sys/blockdev");
  const oldSize = blockDeviceBytes(dev);
  const st = statSync(copy);
  const newSize = st.isBlockDevice() ? blockDeviceBytes(copy) : st.size;
  const r = changeLoopFile(dev, copy, oldSize, newSize);
  console.log(JSON.stringify(r));
}
