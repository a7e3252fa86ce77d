// One keep-alive HTTPS connection to an image server, on Bun's native TLS socket, carrying one request at a time.
// Why not undici here: for 1 MiB range replies over loopback TLS, undici on node:tls cost 0.95 CPU s/GiB and
// reached 1087 MB/s; this client 0.40 s/GiB and 1769 MB/s (tmp micro-benchmark, 8 in flight, 2 nginx, same run).
// The data path is CPU-bound, so that difference is most of what separates a FUSE read from the curl limit.
import tls from "node:tls";
import type { Socket } from "bun";
import type { ImageUrl } from "./url";
import { MAX_HEAD_BYTES, ReplyError, bodyLength, findHeadEnd, parseResponseHead, type ResponseHead } from "./response";
import { setRcvLowat } from "../sys/libc";

export interface ConnectOptions {
  ca?: string | Buffer | string[];  // undefined: the runtime's bundled roots
  connectTimeoutMs: number;
}

/** A failure with a Node-style `code` (ECONNREFUSED, UNABLE_TO_VERIFY_LEAF_SIGNATURE, ...) for describeError. */
export class ConnectionError extends Error {
  override name = "ConnectionError";
  constructor(message: string, readonly code?: string, readonly beforeReply = false) { super(message); }
}

/** What an exchange's caller does with the reply. Throwing from either callback ends the exchange and the connection. */
export interface ReplySink {
  head(h: ResponseHead): void;
  /** `chunk` is valid only during the call: copy what you keep (its memory is freed right after). */
  body(chunk: Uint8Array): void;
}

// Frees a received chunk now rather than at some later GC. The socket layer allocates one per read, so at line rate
// they are most of the garbage; detaching (ArrayBuffer.transfer) is the one way JS can free a buffer at once.
// Micro-benchmark (1 MiB ranges, 8 connections, same run): peak RSS 89 → 67 MiB, same CPU.
function freeNow(chunk: Uint8Array): void {
  const b = chunk.buffer;
  if (b instanceof ArrayBuffer && chunk.byteOffset === 0 && chunk.byteLength === b.byteLength) b.transfer(0);
}

// Batched socket reads. Bun hands over what one read(2) returned, ~30 KiB at a time on loopback: ~17000 data events
// per GiB, each a fresh buffer, a copy and a call into JS. While a long body is still coming, SO_RCVLOWAT at 128 KiB
// makes the kernel wake us once that much is queued: ~4000 events per GiB. Bare client loop (1 MiB ranges, 8
// connections, same run): 0.47-0.50 → 0.30-0.32 CPU s per GiB and +5-7% MB/s; 64 KiB gave 0.39, 256 KiB 0.30-0.31.
// Never stuck: the mark drops back to 1 byte once fewer than RCV_BATCH + RCV_MARGIN body bytes are still to come, so
// what is still to arrive always reaches it (at most one partial TLS record, < 17 KiB, can wait inside the TLS layer),
// and no connection goes back to the pool with it raised (the next reply's head is small). The cost: progress shows
// in steps of up to 128 KiB, so a server slower than that per stall timeout (~13 KB/s at `airroot mount`'s 10 s)
// counts as stalled and its requests move to another server.
const RCV_BATCH = 128 * 1024, RCV_MARGIN = 32 * 1024;

interface Exchange {
  sink: ReplySink;
  resolve(reused: boolean): void;
  reject(e: unknown): void;
  head?: ResponseHead;
  bodyLeft: number;
  gotBytes: boolean; // any reply byte arrived (a reused connection that dies before that may simply have been idle-closed)
}

const withCode = (e: unknown, fallback: string): ConnectionError => {
  const err = e as { code?: string; message?: string };
  return e instanceof ConnectionError ? e : new ConnectionError(err?.message ?? fallback, err?.code);
};

export class HttpsConnection {
  /** performance.now() of the last byte received: the caller's stall detector reads it. */
  lastActivity = performance.now();
  closed = false;
  /** The server announced Connection: close, or the reply was not fully read: do not reuse. */
  reusable = true;
  keepAliveMs?: number;
  private sock!: Socket<undefined>;
  private ex?: Exchange;
  private pendingWrite?: string;
  private readonly headBuf = new Uint8Array(MAX_HEAD_BYTES);
  private headLen = 0;
  private onClose?: () => void;
  private rcvLowat = 1; // the socket's SO_RCVLOWAT (see RCV_BATCH)

  private constructor(readonly url: ImageUrl) {}

  /** Connects, completes the TLS handshake and checks the certificate against the URL's host (IP SANs included). */
  static open(u: ImageUrl, o: ConnectOptions): Promise<HttpsConnection> {
    const c = new HttpsConnection(u);
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (err?: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) { c.destroy(); reject(withCode(err, "connect failed")); } else resolve(c);
      };
      const timer = setTimeout(() => settle(new ConnectionError("connect timed out", "ETIMEDOUT")), o.connectTimeoutMs);
      Bun.connect({
        hostname: u.host, port: u.port, // u.host may carry an IPv6 zone ("fe80::1%eth0"): getaddrinfo takes it
        // No SNI for IP literals (RFC 6066); the identity check below is ours, against the address without the zone.
        tls: { ca: o.ca, serverName: u.isIp ? undefined : u.certHost, rejectUnauthorized: true },
        socket: {
          binaryType: "uint8array",
          open(s) { c.sock = s; if (settled) s.terminate(); }, // a late connect after our timeout: drop it
          handshake(s, ok, authErr) {
            c.sock = s;
            if (!ok || authErr) { settle(authErr ?? new ConnectionError("TLS handshake failed")); return; }
            const bad = tls.checkServerIdentity(u.certHost, s.getPeerCertificate() as tls.PeerCertificate);
            settle(bad);
          },
          data(_s, d) { c.onData(d); },
          drain(s) { c.flush(s); },
          end() { c.lost("connection closed by server"); },
          close(_s, e) { settle(e ?? new ConnectionError("connection closed during the TLS handshake", "ECONNRESET")); c.lost("connection closed by server", e); },
          error(_s, e) { settle(e); c.lost(e?.message ?? "socket error", e); },
          connectError(_s, e) { settle(e); },
        },
      }).then((s) => { c.sock = s; if (settled && !c.closed) c.destroy(); }, (e) => settle(e));
    });
  }

  /** Calls `fn` once when the connection goes away (used by the pool to drop idle connections the server closed). */
  onceClosed(fn: () => void): void { this.onClose = fn; }

  /**
   * Sends one request (a complete HTTP/1.1 head) and feeds the reply to `sink`. Resolves after the last body byte,
   * with the connection free for the next request unless `reusable` turned false.
   */
  exchange(request: string, sink: ReplySink): Promise<void> {
    if (this.closed) return Promise.reject(new ConnectionError("connection closed", "ECONNRESET", true));
    if (this.ex) return Promise.reject(new Error("BUG: two exchanges on one connection"));
    return new Promise<void>((resolve, reject) => {
      this.ex = { sink, resolve: () => resolve(), reject, bodyLeft: 0, gotBytes: false };
      this.headLen = 0;
      this.lastActivity = performance.now();
      this.pendingWrite = request;
      this.flush(this.sock);
    });
  }

  /** Ends the connection now; a running exchange rejects with `reason`. */
  destroy(reason = "connection closed"): void {
    this.lost(reason);
    try { this.sock?.terminate(); } catch { /* already gone */ }
  }

  private flush(s: Socket<undefined>): void {
    if (!this.pendingWrite) return;
    const n = s.write(this.pendingWrite);
    this.pendingWrite = n >= this.pendingWrite.length ? undefined : this.pendingWrite.slice(Math.max(0, n));
  }

  private lost(reason: string, e?: unknown): void {
    if (this.closed) return;
    this.closed = true;
    this.reusable = false;
    const ex = this.ex;
    this.ex = undefined;
    if (ex) {
      const code = (e as { code?: string })?.code ?? "ECONNRESET";
      ex.reject(new ConnectionError(ex.gotBytes ? reason : `${reason} before replying`, code, !ex.gotBytes));
    }
    this.onClose?.();
  }

  private fail(e: unknown): void {
    const ex = this.ex;
    this.ex = undefined;
    this.reusable = false;
    this.destroy();
    ex?.reject(e);
  }

  /** Raises the socket's receive low mark while much of the body is still to come, lowers it for the rest. */
  private batchReads(bodyLeft: number): void {
    const want = bodyLeft >= RCV_BATCH + RCV_MARGIN ? RCV_BATCH : 1;
    if (want === this.rcvLowat) return;
    try {
      const fd = (this.sock as unknown as { fd?: unknown }).fd;
      if (typeof fd !== "number" || fd < 0) throw new Error("the socket has no file descriptor");
      setRcvLowat(fd, want);
      this.rcvLowat = want;
    } catch {
      // Only an optimisation: without it data comes in smaller pieces. A mark that could not be lowered again must not
      // meet the next reply's head, so then the connection is not reused.
      if (this.rcvLowat !== 1) this.reusable = false;
    }
  }

  private onData(d: Uint8Array): void {
    this.lastActivity = performance.now();
    const ex = this.ex;
    // Bytes nobody asked for: the server is out of step with us; this connection cannot be trusted any more.
    if (!ex) { this.destroy("unexpected data from server"); return; }
    ex.gotBytes = true;
    try {
      let rest = d;
      while (!ex.head) {
        const take = Math.min(rest.length, MAX_HEAD_BYTES - this.headLen);
        this.headBuf.set(take === rest.length ? rest : rest.subarray(0, take), this.headLen);
        const end = findHeadEnd(this.headBuf, this.headLen + take, this.headLen);
        if (end < 0) {
          this.headLen += take;
          if (this.headLen >= MAX_HEAD_BYTES) throw new ReplyError(`reply header longer than ${MAX_HEAD_BYTES} bytes`);
          return;
        }
        const used = end - this.headLen;
        const head = parseResponseHead(this.headBuf.subarray(0, end));
        rest = rest.subarray(used);
        this.headLen = 0;
        if (head.status < 200) continue; // interim 1xx reply: the real one follows
        ex.bodyLeft = bodyLength(head);
        ex.head = head;
        ex.sink.head(head);
      }
      if (rest.length > ex.bodyLeft) throw new ReplyError(`body longer than its Content-Length (${rest.length - ex.bodyLeft} extra bytes)`);
      ex.bodyLeft -= rest.length;
      this.batchReads(ex.bodyLeft);
      if (rest.length > 0) ex.sink.body(rest);
      if (ex.bodyLeft === 0) {
        this.ex = undefined;
        ex.resolve(true);
      }
    } catch (e) {
      this.fail(e);
    } finally {
      freeNow(d);
    }
  }
}
