// The `airroot mount` daemon: one remote image (range engine) exposed through the FUSE server, plus the
// status socket, until unmounted or signalled. The read path is fuse → RemoteImage.readViews → http.ts.
import { readFileSync, writeFileSync, writeSync } from "node:fs";
import { basename } from "node:path";
import { RemoteImage } from "../source/image";
import { attachFuse, mountFuse, type ExposedFile, type FuseMount } from "../fuse/mount";
import { createLogger, type Logger } from "../util/log";
import { processMemory } from "../util/procmem";
import { dropExecutableCode } from "../sys/codepages";
import type { MountConfig } from "./config";
import { serveStatus, type DaemonStatus } from "./status";
import { loadImageVerifier, type LoadedVerifier } from "./verify";
import { LINE, resendLabel, type HeldContext, type ResumeState } from "./holder";
import { ImageFill } from "./fill";
import { Untether } from "./untether";
import { selfCommand } from "../util/self";

/** Where a daemon started by the holder finds the FUSE connection's fd. */
const HELD_FD = 3;
/** How long a handover waits for the requests in flight before the holder is told the drain timed out. */
const DRAIN_TIMEOUT_MS = 30_000;

export interface DaemonHandle {
  image: RemoteImage;
  fuse: FuseMount;
  /** Resolves when the daemon has fully stopped (unmounted, sockets closed). */
  stopped: Promise<void>;
  stop(reason: string): Promise<void>;
}

// Garbage at line rate. The TLS socket's per-chunk buffers are freed as soon as they are copied (src/source/conn.ts);
// what is left is promises, views and the socket layer's small objects per chunk.
// History: on one thread with undici, JSC collected lazily (250-400 MiB RSS during a 1 GiB read), so we run a full
// collection per `everyBytes` served (at most one per `minIntervalMs`) and one more once reads stop, after the engine
// has given back its spare and spent blocks; that one also shrinks JSC's heap (after a 1 GiB cold read, RssAnon 5 s
// later ~47 → ~40 MiB: src/source/README.md) and unmaps the executable's code pages (src/sys/codepages.ts).
// Re-measured with HTTPS on this thread (2026-11-26, commit 1caa2dd; compiled daemon, 1 GiB from nginx, 3 alternating runs): without
// the paced collections 980-1110 vs 1021-1052 MB/s, 0.76-0.87 vs 0.83-0.84 CPU s/GiB, but peak VmRSS 87-89 vs 75-80
// MiB: kept, since RSS is a target too.
// After `longIdleMs` without reads the engine's cache is given back as well (RemoteImage.releaseIdleMemory).
const GC_TIMING = { everyBytes: 32 * 1024 * 1024, minIntervalMs: 100, idleMs: 1000, longIdleMs: 60_000 };

export function gcPacer(onIdle: (longIdle: boolean) => void, timing = GC_TIMING): { served(bytes: number): void; stop(): void } {
  let debt = 0, last = 0, lastRead = 0, stage: "reading" | "idle" | "long idle" = "long idle";
  const collect = (readsStopped: boolean) => {
    Bun.gc(true);
    // Once reads stop, also let JSC drop what it can regenerate (compiled code, unlinked bytecode) and return free
    // pages (the JIT recompiles within the first milliseconds of the next burst; Bun marks Bun.shrink deprecated:
    // guarded, so a Bun without it only loses that part), and unmap the executable's code pages, which the next burst
    // faults back in. Not during a read: its peak comes in its first tens of milliseconds, before any paced collection.
    if (readsStopped) {
      (Bun as { shrink?: () => void }).shrink?.();
      dropExecutableCode();
    }
    last = performance.now();
    debt = 0;
  };
  const idle = setInterval(() => {
    const quiet = performance.now() - lastRead;
    if (stage === "reading" && quiet >= timing.idleMs) stage = "idle";
    else if (stage === "idle" && quiet >= timing.longIdleMs) stage = "long idle";
    else return;
    onIdle(stage === "long idle");
    collect(true);
  }, timing.idleMs);
  idle.unref();
  return {
    served(bytes) {
      lastRead = performance.now();
      stage = "reading";
      debt += bytes;
      if (debt >= timing.everyBytes && lastRead - last >= timing.minIntervalMs) collect(false);
    },
    stop() { clearInterval(idle); },
  };
}

/**
 * The line channel to the holder: lines out on stdout, commands in on stdin (GO [RESEND], DRAIN). EOF on stdin means
 * the holder is gone: this daemon serves on, but its crash would now end the mount.
 */
function holderChannel(log: Logger) {
  const handlers = new Set<(line: string) => void>();
  let buf = "";
  process.stdin.on("data", (chunk: Buffer) => {
    buf += chunk.toString();
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      for (const h of handlers) h(line);
    }
  });
  process.stdin.on("end", () => log.warn("the holder is gone: serving on, but a crash of this daemon would now end the mount"));
  return {
    send(line: string) { try { writeSync(1, line + "\n"); } catch { /* holder gone */ } },
    on(h: (line: string) => void) { handlers.add(h); },
    next(prefix: string): Promise<string> {
      return new Promise((resolve) => {
        const h = (line: string) => { if (line.startsWith(prefix)) { handlers.delete(h); resolve(line); } };
        handlers.add(h);
      });
    },
  };
}

/** The lines `airroot status` shows about the holder and how this daemon started. */
function recoveryNote(held: HeldContext, resent: boolean): string {
  const last = held.holder.lastExit;
  if (!held.state) return "first daemon of this mount";
  if (!last) return "took over from the previous daemon (takeover)";
  return `started after the previous daemon died (${last.how} at ${last.at}): ` + (resent
    ? "the requests it had taken, if any, were queued again (FUSE_NOTIFY_RESEND)"
    : `FUSE_NOTIFY_RESEND ${held.holder.resend}: requests in flight at that crash cannot be recovered (their readers wait until killed)`);
}

export async function startMountDaemon(cfg: MountConfig, log: Logger = createLogger({ prefix: "airroot mount", kmsg: true, verbose: cfg.verbose }),
  held?: HeldContext): Promise<DaemonHandle> {
  // The holder spares itself from the OOM killer; the daemon, its child, goes back to the value it had.
  if (held?.oomScoreAdj !== undefined) try { writeFileSync("/proc/self/oom_score_adj", `${held.oomScoreAdj}\n`); } catch {}
  const channel = held ? holderChannel(log) : undefined;
  const ca = cfg.caFile ? readFileSync(cfg.caFile) : undefined;
  let verified: LoadedVerifier | undefined;
  if (cfg.manifestUrl && cfg.imageKeyFile) {
    verified = await loadImageVerifier(cfg.manifestUrl, readFileSync(cfg.imageKeyFile, "utf8"), ca, log, cfg.expectDigest);
  }
  // The cache holds whole blocks. A signed manifest makes the block its chunk size (256 KiB by default): keep the same
  // number of blocks as with 128 KiB ones, or partly read blocks are evicted and fetched twice (measured on a
  // boot-like squashfs workload: 1.21x the distinct bytes with 8 MiB of 256 KiB blocks, 1.00x with 16 MiB).
  const blockScale = verified ? Math.max(1, verified.verifier.chunkSize / (128 * 1024)) : 1;
  const image = await RemoteImage.open(cfg.urls, {
    ca, order: cfg.order, nodeId: cfg.nodeId, weights: cfg.weights, cacheMb: cfg.cacheMb * blockScale, ioTimeoutMs: cfg.ioTimeoutMs,
    stallTimeoutMs: cfg.stallTimeoutMs, verifier: verified?.verifier, log,
  });
  if (verified && verified.size !== image.size) {
    await image.close();
    throw new Error(`the signed manifest describes ${verified.size} bytes but the servers offer ${image.size} bytes of ${image.name}: refusing to mount`);
  }
  const resume: ResumeState | undefined = held?.state;
  const validator = image.status().validator;
  if (resume) {
    // The connection's pages and attributes describe the image the first daemon served: it must be the very same.
    const f = resume.files[0];
    if (!f || f.name !== image.name || f.size !== image.size || resume.validator !== validator) {
      await image.close();
      throw new Error(`the servers now offer ${image.name} (${image.size} bytes, validator ${validator}) but the mount serves ` +
        `${f?.name} (${f?.size} bytes, validator ${resume.validator}): refusing to serve another image on the same mount`);
    }
  }
  const gc = gcPacer((longIdle) => image.releaseIdleMemory(longIdle));
  // Zero-copy: the session writes views of cached blocks to /dev/fuse and releases them right after.
  const files: ExposedFile[] = [{ name: image.name, size: image.size, mtimeMs: resume?.files[0]!.mtimeMs ?? image.mtimeMs,
    read: (off, len) => { gc.served(len); return image.readViews(off, len); } }];
  let fuse: FuseMount;
  let resent = false;
  try {
    if (resume) {
      let resend = !!held!.resend;
      if (held!.standby) {
        // Ready to serve; the daemon being replaced is still finishing its requests. Read nothing before GO.
        channel!.send(LINE.standby);
        resend = (await channel!.next("GO")).includes("RESEND");
      }
      const a = attachFuse({ fd: HELD_FD, mountpoint: cfg.mountpoint, files, init: resume.init, resend, log: (line) => log.info(line) });
      fuse = a.mount;
      resent = a.resent;
      log.info(`serving the FUSE connection ${resume.dev} handed over by the holder (no new INIT)` +
        (resent ? "; asked the kernel to queue again the requests the previous daemon had taken (FUSE_NOTIFY_RESEND)" : ""));
      if (!held!.standby && !resent)
        log.warn("requests the previous daemon had taken when it died cannot be recovered (FUSE_NOTIFY_RESEND " +
          `${held!.holder.resend}): their readers wait until killed; new requests are served`);
    } else {
      fuse = await mountFuse({
        mountpoint: cfg.mountpoint,
        fsname: `airroot:${image.name}`,
        subtype: "airroot",
        files,
        log: (line) => log.info(line),
        fd: held ? HELD_FD : undefined,
      });
    }
  } catch (e) {
    gc.stop();
    await image.close();
    throw e;
  }
  const startedAt = new Date().toISOString();
  const argv0 = cfg.argv0 ?? basename(process.argv0 || "airroot");
  const snapshot = (): DaemonStatus => {
    const img = image.status();
    return {
      mountpoint: cfg.mountpoint, pid: process.pid, argv0, startedAt, image: img, fuse: fuse.stats(),
      memory: { ...processMemory(), cacheMiB: img.cacheBytes / 1048576, blocksMiB: img.blockBytes / 1048576 },
      verified: verified && { manifest: verified.manifestUrl, chunkSize: verified.verifier.chunkSize, badChunks: verified.badChunks() },
      holder: held && { ...held.holder, daemonStart: recoveryNote(held, resent),
        resend: held.holder.resend === "unknown" ? resendLabel(fuse.initParams()) : held.holder.resend },
      fill: fill && { ...fill.status(), untether: untether?.status() },
    };
  };
  // Background fill and untethering (src/mount/fill.ts, untether.ts): started once the mount serves.
  let fill: ImageFill | undefined, untether: Untether | undefined;
  if (cfg.fillPath && verified) {
    const v = verified;
    untether = new Untether({ loop: cfg.untetherLoop ?? "auto", exposedPath: `${cfg.mountpoint}/${image.name}`, copyPath: cfg.fillPath,
      self: selfCommand(), log, onSwitched: () => image.stopFailBackProbes() });
    fill = new ImageFill(image, { path: cfg.fillPath, check: (i, b) => v.check(i, b), rateBytesPerSec: cfg.fillRateBytesPerSec, log,
      onComplete: () => untether!.start() });
  }
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((r) => (resolveStopped = r));
  let stopping: Promise<void> | undefined;
  const stop = (reason: string) => (stopping ??= (async () => {
    log.info(`stopping (${reason}): unmounting ${cfg.mountpoint}`);
    try { await fuse.unmount(); } catch (e) { log.warn(`unmount of ${cfg.mountpoint} failed: ${(e as Error).message}`); }
    status.close();
    gc.stop();
    fill?.stop();
    untether?.stop();
    await image.close();
    channel?.send(LINE.stopped); // the holder lets the mount go instead of restarting a daemon
    resolveStopped();
  })());
  const status = serveStatus(cfg.mountpoint, snapshot, () => void stop("unmount requested"));
  // A handover also ends this handle's session (closed resolves) but must not unmount: the next daemon serves on.
  let handingOver = false;
  fuse.closed.then(() => { if (!handingOver) void stop("the kernel ended the FUSE session (unmounted)"); });
  if (channel) {
    channel.on((line) => {
      if (line !== "DRAIN" || handingOver || stopping) return;
      handingOver = true;
      void (async () => {
        const t0 = performance.now();
        log.info("handing the connection over: reading no new requests, finishing those in flight");
        const ok = await fuse.drain(DRAIN_TIMEOUT_MS);
        status.close();
        gc.stop();
        const left = fuse.stats().readsInFlight;
        log.info(ok ? `handed over after ${(performance.now() - t0).toFixed(0)} ms, nothing left in flight; exiting`
                    : `drain timed out after ${DRAIN_TIMEOUT_MS / 1000} s with ${left} reads in flight; exiting`);
        if (ok) channel.send(LINE.drained);
        process.exit(0);
      })();
    });
  }
  // Start-up code (argument parsing, probing, mounting) is not needed again: let only what serving runs stay resident.
  dropExecutableCode();
  log.info(`serving ${image.name} (${image.size} bytes) at ${cfg.mountpoint}/${image.name}`);
  // Tell the holder what the next daemon needs to serve this connection without INIT.
  if (channel) channel.send(`${LINE.ready} ${JSON.stringify({ init: fuse.initParams(), dev: fuse.dev, validator,
    files: files.map((f) => ({ name: f.name, size: f.size, mtimeMs: f.mtimeMs })) } satisfies ResumeState)}`);
  if (fill) {
    const f = fill;
    f.start().catch((e) => { log.error(`fill of ${cfg.fillPath} cannot start: ${(e as Error).message}`); f.stop(); });
  }
  return { image, fuse, stopped, stop };
}

/** Foreground mode: run until unmounted or SIGTERM/SIGINT, then exit cleanly. */
export async function runMountDaemon(cfg: MountConfig, onReady?: () => void, held?: HeldContext): Promise<void> {
  const daemon = await startMountDaemon(cfg, undefined, held);
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.on(sig, () => void daemon.stop(`received ${sig}`));
  onReady?.();
  await daemon.stopped;
}
