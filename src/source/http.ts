// HTTPS to one image server: a small keep-alive pool of our own connections (conn.ts), and range GETs whose replies
// are validated byte-for-byte (206, exact Content-Range, full length, same validator) before any data is handed back.
import tls from "node:tls";
import type { ImageUrl } from "./url";
import { HeaderError, NO_VALIDATOR, parseContentRange, validatorOf } from "./headers";
import { ConnectionError, HttpsConnection } from "./conn";
import { ReplyError, closesAfter, keepAliveMs, type ResponseHead } from "./response";

/** A problem attributable to one server (network, TLS, timeout, bad reply). The engine fails over on it. */
export class SourceFault extends Error {
  override name = "SourceFault";
  // imageChanged: the server now serves a different image (size/validator), not a transient fault.
  constructor(readonly reason: string, readonly imageChanged = false) { super(reason); }
}

export interface PoolOptions {
  ca?: string | Buffer;      // PEM bundle; undefined = system store
  connections: number;
  connectTimeoutMs: number;
}

let systemStore: string[] | null | undefined;
/** The machine's trust store (what OpenSSL's default paths hold), else undefined for the runtime's bundled roots. */
export function systemCa(): string[] | undefined {
  if (systemStore === undefined) {
    systemStore = null;
    try {
      const list = (tls as { getCACertificates?: (kind: string) => string[] }).getCACertificates?.("system");
      if (Array.isArray(list) && list.length > 0) systemStore = list;
    } catch { /* older runtime: bundled roots */ }
  }
  return systemStore ?? undefined;
}

const IDLE_MS = 30_000; // our keep-alive limit; a server announcing a shorter one (Apache: 5 s) gets that minus a margin

/**
 * Up to `connections` keep-alive connections to one server, one request at a time on each (no pipelining).
 * Requests beyond that wait in FIFO order for a free connection.
 */
export class HttpsPool {
  private readonly idle: HttpsConnection[] = [];
  private readonly waiters: { take(c: HttpsConnection | null): void }[] = [];
  private open = 0; // connected or connecting
  private destroyed = false;
  private readonly ca: string | Buffer | string[] | undefined;

  constructor(readonly url: ImageUrl, private readonly o: PoolOptions) {
    // "No --ca" means the system store, as for curl: a site CA installed in /etc/ssl/certs must work.
    this.ca = o.ca ?? systemCa();
  }

  /**
   * A connection for one exchange: an idle one, a new one while under the limit, else the next one released.
   * `fresh` skips idle connections (a retry after a reused one turned out to be closed by the server).
   */
  async acquire(signal: AbortSignal, fresh = false): Promise<{ conn: HttpsConnection; reused: boolean }> {
    for (;;) {
      if (this.destroyed) throw new ConnectionError("connection pool closed", "UND_ERR_DESTROYED");
      if (signal.aborted) throw new ConnectionError("aborted");
      if (!fresh) {
        const c = this.idle.pop();
        if (c) { clearTimeout(idleTimers.get(c)); return { conn: c, reused: true }; }
      } else if (this.open >= this.o.connections && this.idle.length > 0) {
        const stale = this.idle.shift()!; // make room for the fresh one
        clearTimeout(idleTimers.get(stale));
        stale.destroy();
        this.open--;
      }
      if (this.open < this.o.connections) {
        this.open++;
        try {
          const conn = await HttpsConnection.open(this.url, { ca: this.ca, connectTimeoutMs: this.o.connectTimeoutMs });
          return { conn, reused: false };
        } catch (e) {
          this.open--;
          this.wakeOne();
          throw e;
        }
      }
      // Wait for a release; null means "a slot freed up, try again".
      const got = await new Promise<HttpsConnection | null>((resolve, reject) => {
        const w = { take: (c: HttpsConnection | null) => { signal.removeEventListener("abort", onAbort); resolve(c); } };
        const onAbort = () => { const i = this.waiters.indexOf(w); if (i >= 0) this.waiters.splice(i, 1); reject(new ConnectionError("aborted")); };
        signal.addEventListener("abort", onAbort, { once: true });
        this.waiters.push(w);
      });
      if (got) return { conn: got, reused: true };
    }
  }

  /** Gives a connection back after an exchange: reused if it is still good, else closed and its slot freed. */
  release(conn: HttpsConnection, head: ResponseHead | undefined): void {
    if (head && closesAfter(head)) conn.reusable = false;
    if (this.destroyed || conn.closed || !conn.reusable) {
      if (!conn.closed) conn.destroy();
      this.open--;
      this.wakeOne();
      return;
    }
    const w = this.waiters.shift();
    if (w) { w.take(conn); return; }
    const ka = head ? keepAliveMs(head) : undefined;
    const idleFor = ka === undefined ? IDLE_MS : Math.max(500, Math.min(IDLE_MS, ka - 1000));
    const timer = setTimeout(() => this.dropIdle(conn, true), idleFor);
    timer.unref?.();
    idleTimers.set(conn, timer);
    conn.onceClosed(() => this.dropIdle(conn, false)); // the server closed it while idle
    this.idle.push(conn);
  }

  private dropIdle(conn: HttpsConnection, close: boolean): void {
    const i = this.idle.indexOf(conn);
    if (i < 0) return;
    this.idle.splice(i, 1);
    clearTimeout(idleTimers.get(conn));
    if (close) conn.destroy();
    this.open--;
    this.wakeOne();
  }

  private wakeOne(): void { this.waiters.shift()?.take(null); }

  async destroy(): Promise<void> {
    this.destroyed = true;
    for (const c of this.idle.splice(0)) { clearTimeout(idleTimers.get(c)); c.destroy("connection pool closed"); }
    for (const w of this.waiters.splice(0)) w.take(null); // they see `destroyed` and throw
  }
}
const idleTimers = new WeakMap<HttpsConnection, ReturnType<typeof setTimeout>>();

/** Range GETs from one server (directFetcher; tests may stand in their own). */
export interface RangeFetcher {
  /** getRange's contract: exact bytes of a validated 206, else SourceFault. */
  get(start: number, length: number, t: RangeTimeouts, expect?: Expect, pieceSize?: number, alloc?: PieceAllocator): Promise<RangeReply>;
  destroy(): Promise<void>;
}

/** A fetcher running in the calling thread, over its own connection pool. */
export function directFetcher(u: ImageUrl, o: PoolOptions): RangeFetcher {
  const pool = new HttpsPool(u, o);
  const caGiven = o.ca !== undefined;
  return {
    get: (start, length, t, expect, pieceSize = length, alloc = FRESH) => getRange(pool, u, start, length, t, expect, caGiven, pieceSize, alloc),
    destroy: () => pool.destroy(),
  };
}

export interface RangeTimeouts { stallMs: number; requestMs: number }

/**
 * Body bytes a request must gain per stall period. Socket reads are batched in steps of up to 128 KiB (conn.ts), so a
 * server that is merely slow shows progress in such steps or not at all; 16 KiB per period only refuses a drip.
 */
export const MIN_STALL_PERIOD_BYTES = 16 * 1024;
/**
 * What a reply must match. `sizeOnly` (a signed manifest verifies every chunk): a server that sends no validator, or one
 * expected to send none, is compared on size alone.
 */
export interface Expect { size: number; validator: string; sizeOnly?: boolean }
/** The body comes back split into `pieceSize` pieces (the engine's cache blocks), so each can be freed on its own. */
export interface RangeReply { parts: Uint8Array[]; size: number; validator: string; lastModifiedMs?: number }

/** Where reply pieces come from (the engine's block pool); pieces of a rejected reply are given back. */
export interface PieceAllocator { take(length: number): Uint8Array; release(piece: Uint8Array): void }
/** The pieces (blocks) a `length`-byte reply is split into, in order: `pieceSize` each, the last one shorter. */
export function takePieces(length: number, pieceSize: number, alloc: PieceAllocator): Uint8Array[] {
  const parts: Uint8Array[] = [];
  for (let o = 0; o < length; o += pieceSize) parts.push(alloc.take(Math.min(pieceSize, length - o)));
  return parts;
}
// allocUnsafe: no zero-fill, every byte is overwritten (or the whole reply is discarded on any shortfall).
const FRESH: PieceAllocator = { take: (n) => Buffer.allocUnsafe(n), release: () => {} };

const TLS_CA_CODES = new Set(["UNABLE_TO_VERIFY_LEAF_SIGNATURE", "SELF_SIGNED_CERT_IN_CHAIN", "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_GET_ISSUER_CERT", "UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "CERT_SIGNATURE_FAILURE", "CERT_UNTRUSTED"]);

const secs = (ms: number) => `${+(ms / 1000).toFixed(1)} s`;

/** Turns a network/TLS error into the short human reason used in logs ("connection refused", "TLS: ..."). */
export function describeError(e: unknown, u: ImageUrl, caGiven: boolean): string {
  const err = e as { code?: string; message?: string };
  const code = err?.code ?? "";
  if (TLS_CA_CODES.has(code)) return `TLS: certificate not signed by ${caGiven ? "the given CA" : "a CA in the system store"}`;
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") return `TLS: certificate is not valid for ${u.certHost}`;
  if (code === "CERT_HAS_EXPIRED") return "TLS: certificate has expired";
  if (code === "CERT_NOT_YET_VALID") return "TLS: certificate is not yet valid";
  if (/^ERR_SSL|^ERR_TLS|CERT/.test(code)) return `TLS: ${err.message ?? code}`;
  switch (code) {
    case "ECONNREFUSED": return "connection refused";
    case "ECONNRESET": return "connection reset";
    case "EPIPE": return "connection closed by server";
    case "UND_ERR_SOCKET": return "connection closed by server";
    case "UND_ERR_CLOSED": case "UND_ERR_DESTROYED": return "connection pool closed";
    case "ETIMEDOUT": case "UND_ERR_CONNECT_TIMEOUT": return "connect timed out";
    case "EHOSTUNREACH": return "host unreachable";
    case "ENETUNREACH": return "network unreachable";
    case "EADDRNOTAVAIL": return "address not available";
    case "ENOTFOUND": case "EAI_AGAIN": return `cannot resolve ${u.certHost}`;
    case "EINVAL": return `cannot connect to ${u.host} (bad address or zone)`;
  }
  return err?.message ? String(err.message).slice(0, 200) : String(e).slice(0, 200);
}

/** The request head for one range: Host without the IPv6 zone (RFC 6874 §4: a zone is local, never sent). */
function rangeRequest(u: ImageUrl, start: number, end: number): string {
  const host = u.certHost.includes(":") ? `[${u.certHost}]` : u.certHost;
  return `GET ${u.path} HTTP/1.1\r\nHost: ${host}:${u.port}\r\nRange: bytes=${start}-${end}\r\n` +
    `Accept-Encoding: identity\r\nUser-Agent: airroot\r\n\r\n`;
}

/**
 * GET bytes [start, start+length) and return them only if the reply is a 206 for exactly that range, with the full
 * length, and (when `expect` is given) the expected size and validator. Anything else throws SourceFault.
 */
export async function getRange(pool: HttpsPool, u: ImageUrl, start: number, length: number, t: RangeTimeouts,
  expect: Expect | undefined, caGiven: boolean, pieceSize = length, alloc: PieceAllocator = FRESH): Promise<RangeReply> {
  const end = start + length - 1;
  const ac = new AbortController();
  let why = "";
  let conn: HttpsConnection | undefined;
  const abort = (reason: string) => { if (!why) { why = reason; ac.abort(); conn?.destroy(reason); } };
  // The connection stamps each received chunk; checking that a few times per stall period is cheaper than re-arming
  // a timer per chunk. Before a connection is ours (connecting, or queued for a free one) the clock runs from the start.
  let waitedSince = performance.now();
  // Silence alone misses a server that drips (a byte a second keeps lastActivity fresh): each stall period on a
  // connection must also bring MIN_STALL_PERIOD_BYTES of the body (or the rest of it), else the request fails over.
  let windowStart = waitedSince, windowGot = 0;
  const stall = setInterval(() => {
    const now = performance.now();
    const last = conn ? conn.lastActivity : waitedSince;
    if (now - last >= t.stallMs) { abort(`stalled for ${secs(t.stallMs)}`); return; }
    if (!conn) { windowStart = now; windowGot = got; return; }
    if (now - windowStart < t.stallMs) return;
    const gained = got - windowGot;
    if (gained < Math.min(MIN_STALL_PERIOD_BYTES, length - windowGot)) abort(`too slow: ${gained} bytes in ${secs(now - windowStart)}`);
    windowStart = now; windowGot = got;
  }, Math.max(5, Math.min(1000, t.stallMs / 5)));
  const deadline = setTimeout(() => abort(`no complete reply within ${secs(t.requestMs)}`), t.requestMs);
  // Blocks are taken before the request is sent, not when the reply arrives: the engine checks its block budget when
  // it starts a fetch, and blocks taken later would let every fetch started meanwhile pass the same check.
  const parts = takePieces(length, pieceSize, alloc);
  let handedOver = false;
  let reply: { size: number; validator: string; lastModifiedMs?: number } | undefined;
  let got = 0;
  const sink = {
    head(h: ResponseHead) {
      if (h.status === 200) throw new SourceFault("ignored Range (HTTP 200)");
      if (h.status !== 206) throw new SourceFault(`HTTP ${h.status} for ${u.path}`);
      let cr, validator;
      try {
        cr = parseContentRange(h.headers["content-range"]);
        validator = validatorOf(h.headers);
      } catch (e) {
        if (e instanceof HeaderError) throw new SourceFault(e.message);
        throw e;
      }
      if (cr.start !== start || cr.end !== end) {
        throw new SourceFault(`wrong Content-Range: asked bytes ${start}-${end}, got ${cr.start}-${cr.end}`);
      }
      if (expect && cr.size !== expect.size) throw new SourceFault(`image size changed from ${expect.size} to ${cr.size} bytes`, true);
      if (expect && validator !== expect.validator &&
        !(expect.sizeOnly && (validator === NO_VALIDATOR || expect.validator === NO_VALIDATOR))) {
        throw new SourceFault(validator === NO_VALIDATOR
          ? `sends neither an ETag nor a Last-Modified header (expected validator ${expect.validator}), so nothing proves it serves the same file`
          : `image changed on the server (validator ${validator}, expected ${expect.validator})`, true);
      }
      const ce = h.headers["content-encoding"];
      if (ce !== undefined && String(ce).toLowerCase() !== "identity") throw new SourceFault(`unexpected Content-Encoding ${String(ce).slice(0, 20)}`);
      const cl = h.headers["content-length"];
      if (cl !== String(length)) throw new SourceFault(`Content-Length ${String(cl).slice(0, 20)} for a ${length}-byte range`);
      const lm = Date.parse(String(h.headers["last-modified"] ?? ""));
      reply = { size: cr.size, validator, lastModifiedMs: Number.isFinite(lm) ? lm : undefined };
    },
    body(chunk: Uint8Array) {
      // The connection never passes more than Content-Length bytes, which head() checked equals `length`.
      for (let c = 0; c < chunk.length;) {
        const pi = Math.floor(got / pieceSize), po = got - pi * pieceSize, part = parts[pi];
        const take = Math.min(part.length - po, chunk.length - c);
        part.set(chunk.subarray(c, c + take), po);
        c += take;
        got += take;
      }
    },
  };
  try {
    // A reused connection the server closed while idle fails before any reply byte: GET is idempotent, so that one
    // case is retried once on a new connection instead of being blamed on the server.
    for (let attempt = 0; ; attempt++) {
      let reused = false;
      try {
        const a = await pool.acquire(ac.signal, attempt > 0);
        conn = a.conn;
        reused = a.reused;
        // The stall or deadline may have fired while we were connecting (acquire does not watch the signal then):
        // abort() had no connection to destroy, so nothing would end an exchange started now. The fresh connection
        // itself is fine: `finally` hands it back to the pool.
        if (why) throw new SourceFault(why);
      } catch (e) {
        throw new SourceFault(why || describeError(e, u, caGiven));
      }
      let head: ResponseHead | undefined;
      try {
        await conn.exchange(rangeRequest(u, start, end), { head: (h) => { head = h; sink.head(h); }, body: sink.body });
        pool.release(conn, head);
        conn = undefined;
        break;
      } catch (e) {
        pool.release(conn!, undefined); // not reusable after a failed exchange: closed, slot freed
        conn = undefined;
        if (why) throw new SourceFault(why);
        if (e instanceof SourceFault) throw e;
        if (e instanceof ReplyError) throw new SourceFault(`bad HTTP reply: ${e.message}`);
        if (reused && attempt === 0 && e instanceof ConnectionError && e.beforeReply) {
          got = 0; // the same blocks take the retried reply
          waitedSince = performance.now();
          continue;
        }
        if (reply && e instanceof ConnectionError) throw new SourceFault(`connection closed after ${got} of ${length} bytes`);
        throw new SourceFault(describeError(e, u, caGiven));
      }
    }
    if (why) throw new SourceFault(why);
    if (!reply || got !== length) throw new SourceFault(`short body: got ${got} of ${length} bytes`);
    handedOver = true;
    return { parts, ...reply };
  } finally {
    clearInterval(stall);
    clearTimeout(deadline);
    if (conn) pool.release(conn, undefined);
    // Once the exchange has ended, no more body bytes can arrive into these.
    if (!handedOver) for (const p of parts) alloc.release(p);
  }
}
