// One FUSE session: takes request frames, dispatches them against a read-only Tree and writes whole reply frames.
import { writevSync } from "node:fs";
import * as codec from "./codec.ts";
import type { Request } from "./codec.ts";
import { Errno, FOPEN_KEEP_CACHE, FOPEN_CACHE_DIR, FUSE_KERNEL_VERSION, FUSE_KERNEL_MINOR_VERSION,
         FUSE_MIN_MINOR_VERSION, FUSE_UNIQUE_RESEND, INIT_FLAGS2_HAS_RESEND, InitFlag } from "./protocol.ts";
import type { ReadViews, Tree } from "./tree.ts";

export interface SessionOptions {
  /** Largest READ we ask for, bytes (a multiple of 4096). Default 1 MiB. */
  maxRead?: number;
  /** Async requests (readahead, direct I/O) the kernel may have outstanding. Default 64. */
  maxBackground?: number;
  /** Default 3/4 of maxBackground. */
  congestionThreshold?: number;
  /** Cache lifetime of names and attributes, seconds. The image is immutable, so default one day. */
  cacheTimeoutSec?: number;
  log?: (line: string) => void;
  /**
   * The INIT a previous server of this connection negotiated: the session starts ready and never expects INIT (the
   * kernel sends it once per connection). Given by a daemon that takes over a connection from the holder.
   */
  resume?: InitParams;
}

/** What INIT settled for a connection: all a later server of the same connection needs to know of it. */
export type InitParams = {
  kernelMajor: number;
  kernelMinor: number;
  /** The minor we answered (min of the kernel's and ours). */
  minor: number;
  flags: number;
  /** The kernel's fuse_init_in.flags2 (FUSE_HAS_RESEND and other features it offers beyond bit 31). */
  kernelFlags2: number;
  maxRead: number;
  maxBackground: number;
};

/** Whether the kernel of this connection understands FUSE_NOTIFY_RESEND (it said FUSE_HAS_RESEND in INIT). */
export function kernelHasResend(p: InitParams): boolean {
  return (p.kernelFlags2 & INIT_FLAGS2_HAS_RESEND) !== 0;
}

/** A type alias rather than an interface so it is assignable to plain records (status JSON). */
export type SessionStats = {
  requests: number;
  readsInFlight: number;
  maxReadsInFlight: number;
  negotiatedMaxRead: number;
  negotiatedMaxBackground: number;
  kernelProtocol: string;
  /** Requests the kernel queued again (FUSE_NOTIFY_RESEND) that this session answered. */
  resentRequests: number;
};

/**
 * Writes one whole reply frame (possibly in pieces that writev joins into one frame). A writer that hands the frame to
 * another thread returns a promise: the pieces must stay untouched until it resolves.
 */
export type FrameWriter = (chunks: Uint8Array[]) => void | Promise<void>;

/** The writer for a real /dev/fuse fd. ENOENT means the request was interrupted/aborted: nothing to do. */
export function fdWriter(fd: number, log: (l: string) => void): FrameWriter {
  return (chunks) => {
    try {
      writevSync(fd, chunks as any);
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === "ENOENT" || code === "ENODEV") return; // request gone / session over
      log(`FUSE: writing a reply to /dev/fuse failed: ${code ?? (e as Error).message}`);
    }
  };
}

const WANTED_FLAGS = InitFlag.ASYNC_READ | InitFlag.MAX_PAGES | InitFlag.DO_READDIRPLUS | InitFlag.READDIRPLUS_AUTO |
  InitFlag.PARALLEL_DIROPS | InitFlag.ASYNC_DIO | InitFlag.BIG_WRITES;

const PAGE = 4096;

export class FuseSession {
  private readonly maxRead: number;
  private readonly maxBackground: number;
  private readonly congestion: number;
  private readonly ttl: codec.Validity;
  private readonly log: (line: string) => void;
  private requests = 0;
  private readsInFlight = 0;
  private maxReadsInFlight = 0;
  private negotiatedMaxRead = 0;
  private kernelProtocol = "";
  private resent = 0;
  private init_: InitParams | undefined;
  private nextFh = 1;
  private lastReadErrorLog = new Map<number, number>();
  private initDone!: (ok: boolean, err?: Error) => void;
  /** Resolves once INIT has been answered; rejects if the kernel's protocol is unusable. */
  readonly ready: Promise<void>;
  /** Set when DESTROY arrived. */
  destroyed = false;

  constructor(private readonly tree: Tree, private readonly write: FrameWriter, opts: SessionOptions = {}) {
    this.maxRead = opts.maxRead ?? 1024 * 1024;
    if (!Number.isInteger(this.maxRead) || this.maxRead < PAGE || this.maxRead % PAGE !== 0)
      throw new Error(`FUSE session: maxRead must be a multiple of ${PAGE} bytes, got ${opts.maxRead}`);
    this.maxBackground = opts.maxBackground ?? 64;
    if (!Number.isInteger(this.maxBackground) || this.maxBackground < 1 || this.maxBackground > 65535)
      throw new Error(`FUSE session: maxBackground must be 1..65535, got ${opts.maxBackground}`);
    this.congestion = opts.congestionThreshold ?? Math.max(1, Math.floor((this.maxBackground * 3) / 4));
    const sec = opts.cacheTimeoutSec ?? 86400;
    this.ttl = { entrySec: sec, attrSec: sec };
    this.log = opts.log ?? (() => {});
    this.ready = new Promise<void>((resolve, reject) => {
      this.initDone = (ok, err) => (ok ? resolve() : reject(err));
    });
    this.ready.catch(() => {}); // observed by the mount; avoid an unhandled rejection when nobody waits
    if (opts.resume) {
      const p = opts.resume;
      this.init_ = { ...p };
      this.kernelProtocol = `${p.kernelMajor}.${p.kernelMinor}`;
      this.negotiatedMaxRead = p.maxRead;
      this.initDone(true);
    }
  }

  /** The negotiated INIT, once answered (or given as `resume`). */
  initParams(): InitParams | undefined {
    return this.init_ && { ...this.init_ };
  }

  stats(): SessionStats {
    return { requests: this.requests, readsInFlight: this.readsInFlight, maxReadsInFlight: this.maxReadsInFlight,
             negotiatedMaxRead: this.negotiatedMaxRead, negotiatedMaxBackground: this.kernelProtocol ? this.maxBackground : 0,
             kernelProtocol: this.kernelProtocol, resentRequests: this.resent };
  }

  /** Handles one request frame; replies are written (possibly later, for READ) through the writer. */
  handleFrame(frame: Uint8Array): void {
    this.requests++;
    const d = codec.decodeRequest(frame);
    if (!d.ok) {
      // EIO marks a frame the kernel should never send; other errnos are ordinary answers (e.g. a non-UTF-8 name).
      if (d.errno === Errno.EIO || !d.h) this.log(`FUSE: malformed request: ${d.reason}`);
      if (d.h) this.reply(codec.encodeError(d.h.unique, d.errno));
      return;
    }
    if ((d.req.h.unique & FUSE_UNIQUE_RESEND) !== 0n) this.resent++;
    this.dispatch(d.req);
  }

  private reply(frame: Uint8Array): void {
    this.write([frame]);
  }

  private err(r: Request, errno: number): void {
    this.reply(codec.encodeError(r.h.unique, errno));
  }

  private dispatch(r: Request): void {
    const t = this.tree;
    const node = r.h.nodeid;
    switch (r.op) {
      case "INIT":
        return this.init(r);
      case "LOOKUP": {
        if (!t.isDir(node)) return this.err(r, t.attr(node) ? Errno.ENOTDIR : Errno.ENOENT);
        const id = t.lookup(node, r.name);
        // ENOENT (not a zero-nodeid negative entry): simple, and lookups of missing names are rare here.
        if (id === undefined) return this.err(r, Errno.ENOENT);
        return this.reply(codec.encodeEntry(r.h.unique, id, t.attr(id)!, this.ttl));
      }
      case "GETATTR": {
        const a = t.attr(node);
        if (!a) return this.err(r, Errno.ENOENT);
        return this.reply(codec.encodeAttr(r.h.unique, a, this.ttl.attrSec));
      }
      case "OPEN": {
        if (!t.attr(node)) return this.err(r, Errno.ENOENT);
        if (t.isDir(node)) return this.err(r, Errno.EISDIR);
        if ((r.flags & 3) !== 0) return this.err(r, Errno.EROFS); // O_WRONLY or O_RDWR
        // KEEP_CACHE: the image never changes, so pages stay valid across opens.
        return this.reply(codec.encodeOpen(r.h.unique, this.nextFh++, FOPEN_KEEP_CACHE));
      }
      case "OPENDIR": {
        if (!t.attr(node)) return this.err(r, Errno.ENOENT);
        if (!t.isDir(node)) return this.err(r, Errno.ENOTDIR);
        return this.reply(codec.encodeOpen(r.h.unique, this.nextFh++, FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR));
      }
      case "READ":
        return this.read(r);
      case "READDIR":
      case "READDIRPLUS": {
        if (!t.isDir(node)) return this.err(r, t.attr(node) ? Errno.ENOTDIR : Errno.ENOENT);
        return this.reply(codec.encodeDirents(r.h.unique, t.dirEntries(), r.offset, r.size, r.op === "READDIRPLUS",
                                              this.ttl));
      }
      case "RELEASE":
      case "RELEASEDIR":
      case "FLUSH":
        return this.reply(codec.encodeError(r.h.unique, 0));
      case "STATFS":
        return this.reply(codec.encodeStatfs(r.h.unique, { blocks: t.blocks4k(), files: t.fileCount + 1, bsize: PAGE,
                                                          namelen: 255 }));
      case "ACCESS": {
        if (!t.attr(node)) return this.err(r, Errno.ENOENT);
        return this.err(r, (r.mask & 2) !== 0 ? Errno.EROFS : 0); // W_OK on a read-only fs
      }
      case "GETXATTR":
        return this.err(r, t.attr(node) ? Errno.ENODATA : Errno.ENOENT);
      case "LISTXATTR":
        if (!t.attr(node)) return this.err(r, Errno.ENOENT);
        return this.reply(r.size === 0 ? codec.encodeXattrSize(r.h.unique, 0) : codec.encodeOk(r.h.unique));
      case "FORGET":
      case "BATCH_FORGET":
        return; // nodes are static: nothing to release, and FORGET never gets a reply
      case "INTERRUPT":
        // Reads cannot be cancelled half-way; the original request is answered when its data arrives.
        return;
      case "DESTROY":
        this.destroyed = true;
        return this.reply(codec.encodeError(r.h.unique, 0));
      case "UNSUPPORTED":
        return this.err(r, Errno.ENOSYS);
    }
  }

  private init(r: codec.InitRequest): void {
    if (this.init_) {
      // A connection has exactly one INIT; a second one (or one after a takeover) is a protocol error.
      this.log(`FUSE: unexpected INIT from kernel protocol ${r.major}.${r.minor} on an initialised connection`);
      return this.err(r, Errno.EPROTO);
    }
    this.kernelProtocol = `${r.major}.${r.minor}`;
    if (r.major !== FUSE_KERNEL_VERSION || r.minor < FUSE_MIN_MINOR_VERSION) {
      const err = new Error(`FUSE INIT: kernel speaks protocol ${r.major}.${r.minor}; need ` +
        `${FUSE_KERNEL_VERSION}.${FUSE_MIN_MINOR_VERSION} or newer (Linux 5.4+)`);
      this.log(err.message);
      this.err(r, Errno.EPROTO);
      this.initDone(false, err);
      return;
    }
    const flags = WANTED_FLAGS & r.flags;
    const maxPages = Math.min(65535, this.maxRead / PAGE);
    // Without FUSE_MAX_PAGES the kernel caps requests at 32 pages.
    this.negotiatedMaxRead = (flags & InitFlag.MAX_PAGES) ? this.maxRead : Math.min(this.maxRead, 32 * PAGE);
    this.reply(codec.encodeInit(r.h.unique, {
      major: FUSE_KERNEL_VERSION,
      minor: Math.min(r.minor, FUSE_KERNEL_MINOR_VERSION),
      maxReadahead: Math.min(r.maxReadahead, this.maxRead),
      flags,
      maxBackground: this.maxBackground,
      congestionThreshold: this.congestion,
      maxWrite: PAGE, // read-only: keeps the kernel's minimum read-buffer size small
      timeGran: 1,
      maxPages,
    }));
    this.init_ = { kernelMajor: r.major, kernelMinor: r.minor, minor: Math.min(r.minor, FUSE_KERNEL_MINOR_VERSION), flags,
                   kernelFlags2: r.flags2 >>> 0, maxRead: this.negotiatedMaxRead, maxBackground: this.maxBackground };
    this.log(`FUSE: kernel protocol ${this.kernelProtocol}, max_read ${this.negotiatedMaxRead}, ` +
             `max_background ${this.maxBackground}, flags 0x${flags.toString(16)}, ` +
             `FUSE_NOTIFY_RESEND ${kernelHasResend(this.init_) ? "supported" : "not supported (Linux < 6.9)"}`);
    this.initDone(true);
  }

  private read(r: codec.ReadRequest): void {
    const f = this.tree.file(r.h.nodeid);
    if (!f) return this.err(r, this.tree.isDir(r.h.nodeid) ? Errno.EISDIR : Errno.ENOENT);
    if (r.offset >= f.size || r.size === 0) return this.reply(codec.encodeOk(r.h.unique));
    const length = Math.min(r.size, f.size - r.offset);
    this.readsInFlight++;
    if (this.readsInFlight > this.maxReadsInFlight) this.maxReadsInFlight = this.readsInFlight;
    let p: Promise<Uint8Array | ReadViews>;
    try {
      p = f.read(r.offset, length);
    } catch (e) {
      p = Promise.reject(e);
    }
    Promise.resolve(p).then(
      (data) => {
        this.readsInFlight--;
        const release = data instanceof Uint8Array ? undefined : releaseOnce(data);
        let written: void | Promise<void> = undefined;
        try {
          const chunks = replyChunks(data, length);
          if (typeof chunks === "string") {
            // Never hand the kernel a wrong-sized answer: a short read here would be taken as EOF.
            this.readFailed(f.name, r, Errno.EIO, `${chunks}, expected ${length} bytes`);
            return;
          }
          chunks[0] = codec.encodeOkHeader(r.h.unique, length);
          written = this.write(chunks);
        } catch (e) {
          // Only a custom writer throws (fdWriter logs instead); this runs in a promise callback, so no one else would see it.
          this.log(`FUSE: writing the reply to a read of ${f.name} failed: ${(e as Error)?.message ?? String(e)}`);
        } finally {
          // Only once the kernel has copied the bytes: when the write returned, or when another thread's write did.
          if (release) { if (written) written.then(release, release); else release(); }
        }
      },
      (e) => {
        this.readsInFlight--;
        const n = (e as { errno?: unknown })?.errno;
        const errno = typeof n === "number" && Number.isInteger(n) && n > 0 && n < 4096 ? n : Errno.EIO;
        this.readFailed(f.name, r, errno, (e as Error)?.message ?? String(e));
      },
    );
  }

  /** Answers a failed READ with errno, logging at most one line per errno per second. */
  private readFailed(name: string, r: codec.ReadRequest, errno: number, why: string): void {
    const now = Date.now();
    if ((this.lastReadErrorLog.get(errno) ?? 0) + 1000 <= now) {
      this.lastReadErrorLog.set(errno, now);
      this.log(`FUSE: read of ${name} at ${r.offset}+${r.size} failed (errno ${errno}): ${why}`);
    }
    this.err(r, errno);
  }
}


/** writev takes at most IOV_MAX (1024) pieces; more views than this are joined into one buffer first. */
const MAX_VIEWS = 1000;
/** Placeholder for the reply header slot, filled in by the caller. */
const HEADER_SLOT = new Uint8Array(0);

/** The release callback of a views answer, made safe to call once whatever the answer holds; undefined if none. */
function releaseOnce(data: unknown): (() => void) | undefined {
  const rel = (data as { release?: unknown } | null)?.release;
  if (typeof rel !== "function") return undefined;
  let done = false;
  return () => {
    if (done) return;
    done = true;
    try { rel.call(data); } catch { /* a failing release must not break the reply path */ }
  };
}

/**
 * The reply pieces for a read answer, with slot 0 left for the header, or a description of why the answer is unusable
 * (not bytes, or not exactly `length` bytes).
 */
function replyChunks(data: unknown, length: number): Uint8Array[] | string {
  if (data instanceof Uint8Array) return data.length === length ? [HEADER_SLOT, data] : `returned ${data.length} bytes`;
  const views = (data as { views?: unknown } | null)?.views;
  if (!Array.isArray(views)) return `returned ${data === null ? "null" : typeof data}, not bytes`;
  let total = 0;
  for (const v of views) {
    if (!(v instanceof Uint8Array)) return "returned a view that is not a Uint8Array";
    total += v.length;
  }
  if (total !== length) return `returned ${total} bytes in ${views.length} views`;
  if (views.length <= MAX_VIEWS) return [HEADER_SLOT, ...views];
  const joined = new Uint8Array(total);
  let o = 0;
  for (const v of views) { joined.set(v, o); o += v.length; }
  return [HEADER_SLOT, joined];
}
