// HTTPS to one image server: an undici Pool with our own TLS connector, and range GETs whose replies are validated
// byte-for-byte (206, exact Content-Range, full length, same validator) before any data is handed back.
import tls from "node:tls";
import { Pool } from "undici/index.js"; // the real package: Bun's built-in "undici" stub ignores `ca`
import type { ImageUrl } from "./url";
import { HeaderError, parseContentRange, validatorOf } from "./headers";

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

export function createPool(u: ImageUrl, o: PoolOptions): Pool {
  // "No --ca" means the system store, as for curl: a site CA installed in /etc/ssl/certs must work.
  const ca = o.ca ?? systemCa();
  // Custom connector: node:tls can dial an IPv6 zone ("fe80::1%eth0") that undici's URL handling cannot carry,
  // and we check the certificate against the address without the zone. No SNI for IP literals (RFC 6066).
  const connect = (_opts: unknown, cb: (err: Error | null, sock: tls.TLSSocket | null) => void) => {
    let done = false;
    const sock = tls.connect({
      host: u.host, port: u.port, ca, servername: u.isIp ? undefined : u.certHost,
      ALPNProtocols: ["http/1.1"], rejectUnauthorized: true,
      checkServerIdentity: (_h, cert) => tls.checkServerIdentity(u.certHost, cert),
    });
    const timer = setTimeout(() => finish(Object.assign(new Error("connect timed out"), { code: "UND_ERR_CONNECT_TIMEOUT" })), o.connectTimeoutMs);
    const finish = (err: Error | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) { sock.destroy(); cb(err, null); } else cb(null, sock);
    };
    sock.once("secureConnect", () => finish(null));
    sock.once("error", (e) => finish(e));
  };
  return new Pool(u.origin, {
    connect: connect as unknown as Pool.Options["connect"], connections: o.connections, pipelining: 1,          // keep-alive, no pipelining
    keepAliveTimeout: 30_000, keepAliveMaxTimeout: 120_000,
    headersTimeout: 0, bodyTimeout: 0,                             // our own stall/deadline timers govern
  });
}

export interface RangeTimeouts { stallMs: number; requestMs: number }
export interface Expect { size: number; validator: string }
/** The body comes back split into `pieceSize` pieces (the engine's cache blocks), so each can be freed on its own. */
export interface RangeReply { parts: Uint8Array[]; size: number; validator: string; lastModifiedMs?: number }

/** Where reply pieces come from (the engine's block pool); pieces of a rejected reply are given back. */
export interface PieceAllocator { take(length: number): Uint8Array; release(piece: Uint8Array): void }
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

/**
 * GET bytes [start, start+length) and return them only if the reply is a 206 for exactly that range, with the full
 * length, and (when `expect` is given) the expected size and validator. Anything else throws SourceFault.
 */
export async function getRange(pool: Pool, u: ImageUrl, start: number, length: number, t: RangeTimeouts,
  expect: Expect | undefined, caGiven: boolean, pieceSize = length, alloc: PieceAllocator = FRESH): Promise<RangeReply> {
  const end = start + length - 1;
  const ac = new AbortController();
  let why = "";
  const abort = (reason: string) => { if (!why) { why = reason; ac.abort(); } };
  // Progress is stamped per chunk and checked a few times per stall period: cheaper than re-arming a timer per chunk.
  let lastProgress = performance.now();
  const poke = () => { lastProgress = performance.now(); };
  const stall = setInterval(() => {
    if (performance.now() - lastProgress >= t.stallMs) abort(`stalled for ${secs(t.stallMs)}`);
  }, Math.max(5, Math.min(1000, t.stallMs / 5)));
  const deadline = setTimeout(() => abort(`no complete reply within ${secs(t.requestMs)}`), t.requestMs);
  let res: Awaited<ReturnType<Pool["request"]>> | undefined;
  const parts: Uint8Array[] = [];
  let handedOver = false;
  try {
    try {
      res = await pool.request({ path: u.path, method: "GET", headers: { range: `bytes=${start}-${end}` }, signal: ac.signal });
    } catch (e) {
      throw new SourceFault(why || describeError(e, u, caGiven));
    }
    // Errors surface through the listeners below; this one keeps a destroyed body from raising an unhandled error.
    res.body.on("error", () => {});
    poke();
    const status = res.statusCode;
    if (status === 200) throw new SourceFault("ignored Range (HTTP 200)");
    if (status !== 206) throw new SourceFault(`HTTP ${status} for ${u.path}`);
    let cr, validator;
    try {
      cr = parseContentRange(res.headers["content-range"]);
      validator = validatorOf(res.headers);
    } catch (e) {
      if (e instanceof HeaderError) throw new SourceFault(e.message);
      throw e;
    }
    if (cr.start !== start || cr.end !== end) {
      throw new SourceFault(`wrong Content-Range: asked bytes ${start}-${end}, got ${cr.start}-${cr.end}`);
    }
    if (expect && cr.size !== expect.size) throw new SourceFault(`image size changed from ${expect.size} to ${cr.size} bytes`, true);
    if (expect && validator !== expect.validator) {
      throw new SourceFault(`image changed on the server (validator ${validator}, expected ${expect.validator})`, true);
    }
    const ce = res.headers["content-encoding"];
    if (ce !== undefined && String(ce).toLowerCase() !== "identity") throw new SourceFault(`unexpected Content-Encoding ${String(ce).slice(0, 20)}`);
    const cl = res.headers["content-length"];
    if (cl !== undefined && cl !== String(length)) throw new SourceFault(`Content-Length ${String(cl).slice(0, 20)} for a ${length}-byte range`);
    for (let o = 0; o < length; o += pieceSize) parts.push(alloc.take(Math.min(pieceSize, length - o)));
    const body = res.body;
    // 'data' events rather than async iteration: measurably faster for 128 KiB+ bodies in Bun.
    const got = await new Promise<number>((resolve, reject) => {
      let n = 0;
      body.on("data", (chunk: Uint8Array) => {
        if (n + chunk.length > length) { reject(new SourceFault(`body longer than the ${length} bytes asked for`)); body.destroy(); return; }
        for (let c = 0; c < chunk.length;) {
          const pi = Math.floor(n / pieceSize), po = n - pi * pieceSize, part = parts[pi];
          const take = Math.min(part.length - po, chunk.length - c);
          part.set(chunk.subarray(c, c + take), po);
          c += take;
          n += take;
        }
        poke();
      });
      body.once("end", () => resolve(n));
      body.once("error", (e) => reject(e instanceof SourceFault ? e : new SourceFault(why || describeError(e, u, caGiven))));
      body.once("close", () => reject(new SourceFault(why || `connection closed after ${n} of ${length} bytes`))); // no-op after end
    });
    if (why) throw new SourceFault(why);
    if (got !== length) throw new SourceFault(`short body: got ${got} of ${length} bytes`);
    const lm = Date.parse(String(res.headers["last-modified"] ?? ""));
    res = undefined; // fully consumed: the connection goes back to the pool
    handedOver = true;
    return { parts, size: cr.size, validator, lastModifiedMs: Number.isFinite(lm) ? lm : undefined };
  } finally {
    clearInterval(stall);
    clearTimeout(deadline);
    // Never leave an unread body behind (a 200 with a whole image): destroying it closes that connection.
    if (res) { try { res.body.destroy(); } catch { /* already gone */ } }
    // After destroy() no 'data' event can write into them any more.
    if (!handedOver) for (const p of parts) alloc.release(p);
  }
}
