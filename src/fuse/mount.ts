// Mounting a read-only FUSE filesystem without libfuse: open /dev/fuse, mount(2), serve, umount2.
import { closeSync, writeSync as writeSyncFd, existsSync, openSync, readFileSync, readlinkSync, realpathSync, statSync, writeFileSync } from "node:fs";
import { stat } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { join, resolve } from "node:path";
import * as libc from "../sys/libc.ts";
import { FuseReader } from "./reader.ts";
import { FuseSession, fdWriter, kernelHasResend, type FrameWriter, type InitParams, type SessionStats } from "./session.ts";
import { FUSE_NOTIFY_RESEND } from "./protocol.ts";
import { Tree, type ExposedFile } from "./tree.ts";

export type { ExposedFile, ReadViews } from "./tree.ts";
export type { InitParams } from "./session.ts";
export { kernelHasResend } from "./session.ts";

export interface FuseMountOptions {
  mountpoint: string;
  files: ExposedFile[];
  fsname?: string;          // shown in /proc/mounts source column, default "airroot"
  subtype?: string;         // fuse.<subtype>, default "airroot"
  maxRead?: number;         // default 1 MiB
  maxBackground?: number;   // default 64
  log?: (line: string) => void;
  /**
   * Kernel readahead for the mount (/sys/class/bdi/<dev>/read_ahead_kb); 0 keeps the kernel's 128 KiB. Default
   * 8 MiB: sequential reads then keep ~16 requests of 1 MiB in flight (measured, dd of 1 GiB with 2 ms per read:
   * 1 MiB 0.74 GB/s, 4 MiB 1.7, 8 MiB 3.1, 16 MiB 3.9). Random reads are not inflated: the kernel grows the window
   * only on sequential access. Each request in flight holds its buffer in the daemon, so more costs RSS. 16 MiB was
   * measured too (HTTPS at 2 ms RTT, make bench: 68% of curl against 60-66% with 8 MiB), but a boot-like workload
   * then fetched 1.08-1.11x its distinct bytes instead of 1.02-1.03x (test/source/refetch.test.ts): kept 8 MiB.
   */
  readAheadKb?: number;
  /** How long to wait for the kernel's INIT. Default 10 s. */
  initTimeoutMs?: number;
  /**
   * An open /dev/fuse fd to mount with (e.g. one the holder opened and passed down, so it keeps the connection when
   * this process dies); default: open one.
   */
  fd?: number;
}

export interface FuseMount {
  readonly mountpoint: string;
  readonly fd: number;             // the /dev/fuse fd
  readonly dev: string;            // the connection's device "0:N" (its fusectl directory is /sys/fs/fuse/connections/N)
  readonly closed: Promise<void>;  // resolves when the kernel session ends (unmounted/aborted)
  stats(): SessionStats;
  /** The INIT this connection negotiated: what a later server of it needs (attachFuse). */
  initParams(): InitParams;
  /**
   * Stops taking requests without losing one, for a handover: the read parked in the kernel is made to return (a
   * LOOKUP of a name that does not exist, which only this reader can take while no other server reads), its request
   * is answered, then every read in flight. Resolves true once nothing is left, false if that took longer than
   * `timeoutMs`. The connection stays up; no further request is read.
   */
  drain(timeoutMs: number): Promise<boolean>;
  unmount(): Promise<void>;        // idempotent
  /**
   * Aborts the kernel connection (fusectl's `abort`): every pending and later request fails with ENOTCONN and the
   * session ends. The last resort for a lazily detached mount whose users hang; unmount() still removes the mount.
   */
  abort(): void;
}

/** The subtype becomes the fs type "fuse.<subtype>": keep it to a plain word. */
const SUBTYPE = /^[A-Za-z0-9._-]{1,64}$/;

/** Mounts `files` read-only at `mountpoint`; resolves once the kernel's INIT is answered. */
export async function mountFuse(opts: FuseMountOptions): Promise<FuseMount> {
  // The kernel lists mounts by canonical path, and we look ours up there: resolve symlinks first.
  let mountpoint: string;
  try { mountpoint = realpathSync(resolve(opts.mountpoint)); } catch (e) {
    throw new Error(`FUSE mount: mountpoint ${opts.mountpoint} is not usable: ${(e as Error).message}`);
  }
  const fsname = opts.fsname ?? "airroot", subtype = opts.subtype ?? "airroot";
  const maxRead = opts.maxRead ?? 1024 * 1024;
  const log = opts.log ?? (() => {});
  if (!SUBTYPE.test(subtype)) throw new Error(`FUSE mount: subtype "${subtype}" must be 1-64 characters of [A-Za-z0-9._-]`);
  // fsname is mount(2)'s source argument (not part of the option string); it only has to be one printable line.
  if (fsname.length === 0 || fsname.length > 255 || /[\0-\x1f]/.test(fsname))
    throw new Error(`FUSE mount: fsname ${JSON.stringify(fsname)} must be 1-255 characters without control characters`);
  const readAheadKb = opts.readAheadKb ?? 8192;
  if (!Number.isInteger(readAheadKb) || readAheadKb < 0 || readAheadKb > 1024 * 1024)
    throw new Error(`FUSE mount: readAheadKb must be 0..1048576, got ${opts.readAheadKb}`);
  // Checked before stat(): stat() of a FUSE mount that this very process serves would deadlock.
  const existing = findMount(mountpoint);
  if (existing && (existing.fstype === "fuse" || existing.fstype.startsWith("fuse.")))
    throw new Error(`FUSE mount: ${mountpoint} already has ${existing.fstype} (${existing.source}) mounted; unmount it first`);
  if (!statSync(mountpoint).isDirectory()) throw new Error(`FUSE mount: mountpoint ${mountpoint} is not a directory`);

  const tree = new Tree(opts.files);
  // Replies that complete after the session ended must not be written: the fd number may belong to another file.
  let write: FrameWriter = () => {};
  const session = new FuseSession(tree, (chunks) => write(chunks), { maxRead, maxBackground: opts.maxBackground, log });
  let fd: number;
  try {
    fd = opts.fd ?? openSync("/dev/fuse", "r+");
    if (opts.fd !== undefined) checkFuseFd(opts.fd);
  } catch (e) {
    if (opts.fd !== undefined) throw e;
    throw new Error(`FUSE mount: cannot open /dev/fuse (${(e as { code?: string }).code ?? (e as Error).message}); ` +
                    `load the fuse module (modprobe fuse) and run as root`);
  }
  // Every reply is written at once, on this thread: a write to /dev/fuse waits for nothing but the kernel's copy into
  // the page cache. Commit bcb1745 wrote READ replies on Bun's I/O pool (a thread beside the TLS work of a fetch thread);
  // with HTTPS back on this thread that bought nothing: 5 alternating runs, 1 GiB cold read, same MB/s (1002 vs 1004),
  // 0.83 vs 0.88 daemon CPU s/GiB, peak ~2 MiB lower; in make bench's rows 68% vs 61% of curl at 0 ms, 80% vs 82% at
  // 2 ms. It also leaves the pool to the one parked read of /dev/fuse (reader.ts) and to name lookups.
  write = fdWriter(fd, log);

  try {
    libc.mount({ source: fsname, target: mountpoint, fstype: `fuse.${subtype}`,
                 flags: libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV,
                 data: `fd=${fd},rootmode=40000,user_id=0,group_id=0,allow_other,max_read=${maxRead}` });
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  // The connection's device, read back from mountinfo: identifies our mount later (and its fusectl directory).
  const dev = findMount(mountpoint)?.dev ?? "";

  // Reading starts only after mount(2): before it, read() on the fd fails with EPERM.
  const served = serveConnection(fd, mountpoint, dev, session, log, () => { write = () => {}; });
  try {
    await waitReady(session.ready, served.closed, opts.initTimeoutMs ?? 10_000, mountpoint);
  } catch (e) {
    await served.unmount().catch(() => {});
    served.end("INIT failed");
    throw e;
  }
  if (readAheadKb > 0) setReadahead(dev, mountpoint, readAheadKb, log);
  return served.handle;
}

export interface AttachOptions {
  /** The /dev/fuse fd of a connection that is already mounted and initialised (passed down by the holder). */
  fd: number;
  mountpoint: string;
  files: ExposedFile[];
  /** The INIT the connection's first server negotiated. */
  init: InitParams;
  /**
   * Send FUSE_NOTIFY_RESEND before reading (when the kernel has it): requests a dead server had read are queued
   * again. Default true; a graceful handover, after which nothing is pending, passes false.
   */
  resend?: boolean;
  log?: (line: string) => void;
}

/**
 * Serves an existing FUSE connection (no mount(2), no INIT): what a daemon started by the holder does after the
 * previous one died or handed over. The mount must be the same one (the connection's device is checked).
 */
export function attachFuse(opts: AttachOptions): { mount: FuseMount; resent: boolean } {
  const log = opts.log ?? (() => {});
  const mountpoint = resolve(opts.mountpoint);
  checkFuseFd(opts.fd);
  const dev = findMount(mountpoint)?.dev ?? "";
  const tree = new Tree(opts.files);
  let write: FrameWriter = fdWriter(opts.fd, log);
  const session = new FuseSession(tree, (chunks) => write(chunks), {
    maxRead: opts.init.maxRead, maxBackground: opts.init.maxBackground, log, resume: opts.init,
  });
  let resent = false;
  if ((opts.resend ?? true) && kernelHasResend(opts.init)) {
    // fuse_out_header { len 16, error = notify code, unique 0 }: a notification, not a reply.
    const h = new Uint8Array(16);
    const v = new DataView(h.buffer);
    v.setUint32(0, 16, true);
    v.setInt32(4, FUSE_NOTIFY_RESEND, true);
    try {
      writeSyncFd(opts.fd, h); // throws the kernel's errno (EINVAL for a notify code it does not know)
      resent = true;
    } catch (e) {
      log(`FUSE: FUSE_NOTIFY_RESEND failed: ${(e as Error).message}`);
    }
  }
  const served = serveConnection(opts.fd, mountpoint, dev, session, log, () => { write = () => {}; });
  return { mount: served.handle, resent };
}

/** Refuses an fd that is not /dev/fuse: a wrong fd passed down must fail here, not as odd read errors later. */
function checkFuseFd(fd: number): void {
  let target = "";
  try { target = readlinkSync(`/proc/self/fd/${fd}`); } catch {}
  if (target !== "/dev/fuse") throw new Error(`FUSE: fd ${fd} is not /dev/fuse (it is ${target || "not open"})`);
}

/** The reader, the end of the session, unmount, abort and drain of one connection served by `session`. */
function serveConnection(fd: number, mountpoint: string, dev: string, session: FuseSession, log: (l: string) => void,
                         silence: () => void) {
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  let ended = false;
  let reader: FuseReader | undefined;
  const onEnd = (reason: string, error?: Error) => {
    if (ended) return;
    ended = true;
    silence();
    if (error) log(error.message);
    log(`FUSE: session on ${mountpoint} ended (${reason})`);
    reader?.stop();
    // Close the fd only once no parked read can use its number again.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const gone = (reader?.exited ?? Promise.resolve()).then(() => true);
    const late = new Promise<false>((r) => { timer = setTimeout(() => r(false), 5000); });
    void Promise.race([gone, late]).then((ok) => {
      clearTimeout(timer);
      if (ok) { try { closeSync(fd); } catch {} }
      else log(`FUSE: the read of ${mountpoint} did not return within 5 s; leaving fd ${fd} open`);
      resolveClosed();
    });
  };
  reader = new FuseReader(fd, 64 * 1024, { onFrame: (f) => session.handleFrame(f), onEnd });
  const r = reader;

  const unmount = makeUnmount(mountpoint, dev, closed, () => ended, log);
  const drain = async (timeoutMs: number): Promise<boolean> => {
    const deadline = Date.now() + timeoutMs;
    r.pause();
    if (r.reading) {
      // One LOOKUP is enough: no other server reads this connection during a handover, so it reaches our parked
      // read (or that read returns with an earlier request). Names are answered ENOENT, never cached as negative.
      void stat(join(mountpoint, `.airroot-handover-${randomBytes(8).toString("hex")}`)).catch(() => {});
    }
    const gone = await Promise.race([r.exited.then(() => true), closed.then(() => true), Bun.sleep(timeoutMs).then(() => false)]);
    if (gone) while (session.stats().readsInFlight > 0 && Date.now() < deadline && !ended) await Bun.sleep(5);
    const ok = gone && session.stats().readsInFlight === 0;
    // Handed over: this handle is done (closed resolves), but the fd stays open, since the connection goes on with
    // the next server. Late answers are dropped: the next server answers those requests again (RESEND).
    if (!ended) {
      ended = true;
      silence();
      log(`FUSE: stopped serving ${mountpoint} for a handover (${ok ? "nothing left in flight" : `${session.stats().readsInFlight} reads still in flight`})`);
      resolveClosed();
    }
    return ok;
  };
  const handle: FuseMount = {
    mountpoint,
    fd,
    dev,
    closed,
    stats: () => session.stats(),
    initParams: () => {
      const p = session.initParams();
      if (!p) throw new Error("FUSE: the connection is not initialised yet");
      return p;
    },
    drain,
    unmount,
    abort: () => abortConnection(dev, mountpoint, log),
  };
  return { handle, closed, unmount, end: onEnd };
}

function waitReady(ready: Promise<void>, closed: Promise<void>, timeoutMs: number, mp: string): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    ready,
    closed.then(() => { throw new Error(`FUSE mount on ${mp}: the kernel ended the session before INIT`); }),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`FUSE mount on ${mp}: no INIT from the kernel within ${timeoutMs} ms`)),
                         timeoutMs);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * umount2 if our mount is still there; a busy mount (open files, a loop device on top) is detached lazily instead.
 * After a plain umount the kernel ends the connection at once and the parked read sees ENODEV: wait for that.
 */
function makeUnmount(mp: string, dev: string, closed: Promise<void>, isEnded: () => boolean, log: (l: string) => void) {
  let pending: Promise<void> | undefined;
  return () => (pending ??= (async () => {
    let lazy = false;
    if (!dev || findMount(mp)?.dev === dev) {
      try {
        libc.umount2(mp, 0);
      } catch (e) {
        const code = (e as libc.SysError).code;
        if (code === "EBUSY") {
          log(`FUSE: ${mp} is busy; detaching it lazily (it keeps serving until its last user closes it)`);
          libc.umount2(mp, libc.MNT_DETACH);
          lazy = true;
        } else if (code !== "EINVAL" && code !== "ENOENT") {
          throw e; // EINVAL/ENOENT: unmounted meanwhile by someone else
        }
      }
    }
    if (lazy || isEnded()) return;
    // The kernel ends the connection once the superblock goes; requests nobody will ever answer (taken by a daemon
    // that died on a kernel without FUSE_NOTIFY_RESEND) can keep it alive: abort it then, so this does not hang.
    const t = setTimeout(() => {
      log(`FUSE: ${mp} unmounted but the session has not ended after 5 s; aborting the connection`);
      try { abortConnection(dev, mp, log); } catch (e) { log((e as Error).message); }
    }, 5000);
    await closed;
    clearTimeout(t);
  })());
}

/** Writes 1 to /sys/fs/fuse/connections/<minor>/abort, mounting fusectl there first if needed. */
function abortConnection(dev: string, mp: string, log: (l: string) => void): void {
  const minor = dev.split(":")[1];
  if (!minor) throw new Error(`FUSE abort of ${mp}: the connection's device is unknown`);
  const dir = "/sys/fs/fuse/connections";
  const path = `${dir}/${minor}/abort`;
  if (!existsSync(path) && !findMount(dir)) {
    try { libc.mount({ source: "fusectl", target: dir, fstype: "fusectl" }); } catch (e) {
      throw new Error(`FUSE abort of ${mp}: fusectl is not mounted and mounting it failed: ${(e as Error).message}`);
    }
  }
  try {
    writeFileSync(path, "1\n");
  } catch (e) {
    throw new Error(`FUSE abort of ${mp}: writing ${path} failed: ${(e as Error).message}`);
  }
  log(`FUSE: aborted the connection of ${mp} (${path})`);
}

export interface MountEntry {
  dev: string;     // "major:minor"
  fstype: string;  // e.g. "fuse.airroot"
  source: string;
}

/**
 * The topmost mount at `mp` from /proc/self/mountinfo, or undefined. Reading mountinfo never touches the mount
 * itself, so a server may call this for its own mount without deadlocking.
 */
export function findMount(mp: string): MountEntry | undefined {
  const want = resolve(mp);
  let found: MountEntry | undefined;
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const f = line.split(" ");
    const sep = f.indexOf("-", 6);
    if (sep < 0 || f.length < sep + 3 || unescapeMount(f[4]!) !== want) continue;
    found = { dev: f[2]!, fstype: f[sep + 1]!, source: unescapeMount(f[sep + 2]!) }; // the last one is on top
  }
  return found;
}

/** The mount's device "major:minor" (see findMount). */
export function mountDevice(mp: string): string | undefined {
  return findMount(mp)?.dev;
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}

function setReadahead(dev: string, mp: string, kb: number, log: (l: string) => void): void {
  const path = `/sys/class/bdi/${dev}/read_ahead_kb`;
  try {
    if (!dev) throw new Error("mount not found in /proc/self/mountinfo");
    writeFileSync(path, `${Math.floor(kb)}\n`);
  } catch (e) {
    log(`FUSE: could not set readahead of ${mp} to ${kb} KiB via ${path}: ${(e as Error).message}`);
  }
}
