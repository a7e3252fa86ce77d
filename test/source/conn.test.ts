// The range engine's own HTTP/1.1 client (src/source/conn.ts, http.ts) against real servers on loopback: nginx and
// Apache closing idle keep-alive connections (and Apache ending them with Connection: close), a wrong CA, and the
// pool's connection limit. Faults no real server can be made to produce on demand (a head written one byte at a time,
// 1xx interim replies, bytes after a complete reply, a certificate naming another address, a connection killed just
// as a request arrives, a slow TLS handshake) come from a small node:tls mock, used for those faults only.
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { join } from "node:path";
import { chmodSync, mkdirSync, readFileSync, utimesSync, writeFileSync } from "node:fs";
import tls from "node:tls";
import type { Socket } from "node:net";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { LOOPBACK_SANS, makeTestPki, type TestPki } from "../helpers/pki";
import { startNginx, type Nginx } from "../helpers/nginx";
import { startApache, type Apache } from "../helpers/apache";
import { startRelay } from "../helpers/relay";
import { freePort } from "../helpers/ports";
import { crashNginx } from "../helpers/crash";
import { parseImageUrl, type ImageUrl } from "../../src/source/url";
import { HttpsConnection } from "../../src/source/conn";
import { HttpsPool, SourceFault, getRange, type Expect, type RangeTimeouts } from "../../src/source/http";

setDefaultTimeout(60_000); // real servers and TLS on a shared 2-core machine

const KiB = 1024, MiB = 1024 * KiB;
let dir: string, pki: TestPki, ca: Buffer, data: Buffer;
let ng: Nginx, ngUrl: ImageUrl;
let ap: Apache, apUrl: ImageUrl, apLog: string;
const closers: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  dir = scratchDir();
  chmodSync(dir, 0o755); // Apache's workers run as www-data
  pki = makeTestPki(join(dir, "pki"));
  chmodSync(pki.serverKey, 0o644);
  ca = readFileSync(pki.caCert);
  const www = join(dir, "www");
  mkdirSync(www, { mode: 0o755 });
  data = Buffer.from(crypto.getRandomValues(new Uint8Array(4 * MiB)));
  writeFileSync(join(www, "img.bin"), data, { mode: 0o644 });
  utimesSync(join(www, "img.bin"), new Date(1_700_000_000_000), new Date(1_700_000_000_000));

  const pn = await freePort("127.0.0.2");
  ng = await startNginx({
    root: www, listen: [{ host: "127.0.0.2", port: pn }], cert: pki.serverCert, key: pki.serverKey, workDir: join(dir, "ng"),
    extra: "keepalive_timeout 1s;", // closes a connection idle for 1 s; announces no Keep-Alive timeout
  });
  closers.push(() => crashNginx(ng));
  ngUrl = parseImageUrl(ng.urlFor("img.bin"));

  const pa = await freePort("127.0.0.3");
  apLog = join(dir, "ap", "access.log");
  ap = await startApache({
    workDir: join(dir, "ap"), waitFor: [{ host: "127.0.0.3", port: pa }],
    siteConfig: `
KeepAlive On
KeepAliveTimeout 1
MaxKeepAliveRequests 3
LogFormat "%{remote}p \\"%r\\" %>s %b" conn
Listen 127.0.0.3:${pa} https
<VirtualHost 127.0.0.3:${pa}>
    SSLEngine on
    SSLCertificateFile ${pki.serverCert}
    SSLCertificateKeyFile ${pki.serverKey}
    DocumentRoot ${www}
    CustomLog ${apLog} conn
    <Directory ${www}>
        Require all granted
    </Directory>
</VirtualHost>
`,
  });
  closers.push(() => ap.stop());
  apUrl = parseImageUrl(`https://127.0.0.3:${pa}/img.bin`);
});

afterAll(async () => {
  for (const c of closers.splice(0).reverse()) { try { await c(); } catch { /* keep closing the others */ } }
  removeScratchDirs();
});

function rng(seed: number) {
  return () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x80000000; };
}

const T: RangeTimeouts = { stallMs: 5000, requestMs: 20_000 };

/** One getRange whose bytes must be exactly the file's. */
async function readRange(pool: HttpsPool, u: ImageUrl, off: number, len: number, exp?: Expect, t = T): Promise<Expect> {
  const r = await getRange(pool, u, off, len, t, exp, true, 64 * KiB);
  const got = Buffer.concat(r.parts);
  expect(got.length).toBe(len);
  expect(got.equals(data.subarray(off, off + len))).toBe(true);
  return { size: r.size, validator: r.validator };
}

function randomRange(r: () => number): [number, number] {
  const len = [1, 4096, 131072, 200_001, MiB][Math.floor(r() * 5)];
  return [Math.floor(r() * (data.length - len)), len];
}

const idleCount = (p: HttpsPool) => (p as unknown as { idle: unknown[] }).idle.length;

/**
 * Counts what the client really does: TLS connections opened (HttpsConnection.open), exchanges (requests sent) and
 * exchanges that failed, by wrapping the real methods (restored afterwards).
 */
function instrument() {
  const C = HttpsConnection as unknown as { open: typeof HttpsConnection.open; prototype: Record<string, (...a: unknown[]) => unknown> };
  const open = C.open, exchange = C.prototype.exchange, onData = C.prototype.onData;
  const stats = { opens: 0, exchanges: 0, failures: [] as string[], chunks: 0 };
  C.open = (...a: Parameters<typeof HttpsConnection.open>) => { stats.opens++; return open.apply(HttpsConnection, a); };
  C.prototype.exchange = function (this: unknown, ...a: unknown[]) {
    stats.exchanges++;
    return (exchange.apply(this, a) as Promise<void>).catch((e) => { stats.failures.push(String((e as Error)?.message)); throw e; });
  };
  C.prototype.onData = function (this: unknown, ...a: unknown[]) { stats.chunks++; return onData.apply(this, a); };
  return { stats, restore() { C.open = open; C.prototype.exchange = exchange; C.prototype.onData = onData; } };
}

test("nginx keepalive_timeout 1s: reads across idle gaps longer than the timeout all succeed, none is a fault", async () => {
  const ins = instrument();
  const pool = new HttpsPool(ngUrl, { ca, connections: 3, connectTimeoutMs: 5000 });
  const r = rng(1);
  let reads = 0, exp: Expect | undefined;
  try {
    // Gaps well past the timeout (nginx has closed every idle connection) and right around it (a request may meet
    // a connection nginx is closing at that moment: that must be retried on a fresh one, not reported as a fault).
    for (const gap of [1400, 950, 1000, 1050, 1400, 990, 1010, 1400, 1100, 1400]) {
      await Promise.all(Array.from({ length: 4 }, async () => { const [o, l] = randomRange(r); exp = await readRange(pool, ngUrl, o, l, exp); }));
      const [o, l] = randomRange(r);
      exp = await readRange(pool, ngUrl, o, l, exp); // on a connection just used: reused
      reads += 5;
      await Bun.sleep(gap);
      // nginx closed the idle connections; the pool noticed and dropped them instead of keeping dead ones.
      if (gap >= 1400) expect(idleCount(pool)).toBe(0);
    }
    exp = await readRange(pool, ngUrl, 0, 1, exp);
    reads++;
  } finally {
    await pool.destroy();
    ins.restore();
  }
  expect(ins.stats.opens).toBeLessThan(reads);          // connections were reused within a burst ...
  expect(ins.stats.opens).toBeGreaterThanOrEqual(5 + 1); // ... and replaced after each gap nginx closed them in
  // Every failed exchange (a connection closed under a request) was followed by a successful retry: all reads returned.
  for (const f of ins.stats.failures) expect(f).toMatch(/before replying|reset|closed/);
  expect(ins.stats.exchanges).toBe(reads + ins.stats.failures.length);
}, 60_000);

test("Apache KeepAliveTimeout 1, MaxKeepAliveRequests 3: connections are reused, Connection: close honoured", async () => {
  // Apache 2.4.71 announces no Keep-Alive timeout to an HTTP/1.1 client, and its MaxKeepAliveRequests counts the
  // requests after the first: the 4th reply on a connection carries Connection: close (checked with curl -D).
  const ins = instrument();
  const pool = new HttpsPool(apUrl, { ca, connections: 2, connectTimeoutMs: 5000 });
  const r = rng(2);
  let reads = 0, exp: Expect | undefined, burstOpens = 0, burstFailures = 0;
  try {
    // 12 back-to-back reads: 4 per connection, then Connection: close ends it and the next read opens a new one.
    // A client ignoring Connection: close would send the 5th request into a closing connection (a failed exchange).
    for (let i = 0; i < 12; i++) { const [o, l] = randomRange(r); exp = await readRange(pool, apUrl, o, l, exp); reads++; }
    burstOpens = ins.stats.opens;
    burstFailures = ins.stats.failures.length;
    // Pairs of concurrent reads separated by gaps longer than Apache's 1 s: Apache closes the idle connections, the
    // pool drops them (or, in a race, retries on a fresh one); no read fails.
    for (let i = 0; i < 5; i++) {
      await Promise.all([0, 1].map(async () => { const [o, l] = randomRange(r); exp = await readRange(pool, apUrl, o, l, exp); }));
      reads += 2;
      await Bun.sleep(1500);
      expect(idleCount(pool)).toBe(0);
    }
  } finally {
    await pool.destroy();
    ins.restore();
  }
  expect(burstOpens).toBe(3);
  expect(burstFailures).toBe(0);
  for (const f of ins.stats.failures) expect(f).toMatch(/before replying$/);
  expect(ins.stats.exchanges).toBe(reads + ins.stats.failures.length);
  expect(ins.stats.opens).toBeLessThan(reads);

  // Apache's own view: one access-log line per request served, tagged with the client's port (= one TLS connection).
  await Bun.sleep(200);
  const lines = readFileSync(apLog, "utf8").trim().split("\n");
  expect(lines).toHaveLength(reads);
  const perConn = new Map<string, number>();
  for (const l of lines) {
    const m = /^(\d+) "GET \/img\.bin HTTP\/1\.1" 206 (\d+)$/.exec(l);
    expect(m, l).not.toBeNull();
    perConn.set(m![1], (perConn.get(m![1]) ?? 0) + 1);
  }
  expect(perConn.size).toBeLessThanOrEqual(ins.stats.opens); // handshakes Apache saw requests on ...
  expect(perConn.size).toBeLessThan(reads);                   // ... fewer than requests
  expect(Math.max(...perConn.values())).toBe(4);               // reused up to Apache's limit, never beyond
  expect([...perConn.values()].slice(0, 3)).toEqual([4, 4, 4]);
}, 60_000);

test("nginx announcing Keep-Alive: timeout=2: the pool closes idle connections itself, a second early", async () => {
  const pn = await freePort("127.0.0.2");
  const ng2 = await startNginx({
    root: join(dir, "www"), listen: [{ host: "127.0.0.2", port: pn }], cert: pki.serverCert, key: pki.serverKey,
    workDir: join(dir, "ng2"), extra: "keepalive_timeout 2s 2s;", // closes after 2 s idle and says so
  });
  closers.push(() => crashNginx(ng2));
  const u = parseImageUrl(ng2.urlFor("img.bin"));
  const ins = instrument();
  const pool = new HttpsPool(u, { ca, connections: 2, connectTimeoutMs: 5000 });
  try {
    const exp = await readRange(pool, u, 10, 1000);
    await Bun.sleep(500);
    expect(idleCount(pool)).toBe(1);  // kept while well inside the announced timeout
    await readRange(pool, u, 20, 1000, exp);
    await Bun.sleep(1400);
    expect(idleCount(pool)).toBe(0);  // gone after 1 s (2 s minus the margin), before nginx would close it at 2 s
    await readRange(pool, u, 30, 1000, exp);
  } finally {
    await pool.destroy();
    ins.restore();
  }
  expect(ins.stats.opens).toBe(2);
  expect(ins.stats.failures).toEqual([]);
}, 30_000);

test("a CA that did not sign nginx's certificate: refused, and the reason names the CA", async () => {
  const other = makeTestPki(join(dir, "other-pki"), LOOPBACK_SANS, "Some Other CA");
  const pool = new HttpsPool(ngUrl, { ca: readFileSync(other.caCert), connections: 2, connectTimeoutMs: 5000 });
  try {
    const e = await getRange(pool, ngUrl, 0, 1, T, undefined, true).catch((x) => x);
    expect(e).toBeInstanceOf(SourceFault);
    expect(e.message).toBe("TLS: certificate not signed by the given CA");
  } finally { await pool.destroy(); }
  // No --ca: the machine's trust store, which does not hold the test CA either.
  const sys = new HttpsPool(ngUrl, { connections: 2, connectTimeoutMs: 5000 });
  try {
    const e = await getRange(sys, ngUrl, 0, 1, T, undefined, false).catch((x) => x);
    expect(e).toBeInstanceOf(SourceFault);
    expect(e.message).toBe("TLS: certificate not signed by a CA in the system store");
  } finally { await sys.destroy(); }
}, 30_000);

test("each body chunk is freed right after the sink's call (the contract: copy what you keep), bytes stay exact", async () => {
  const conn = await HttpsConnection.open(ngUrl, { ca, connectTimeoutMs: 5000 });
  try {
    const kept: Uint8Array[] = [];
    const copy: Buffer[] = [];
    await conn.exchange(`GET ${ngUrl.path} HTTP/1.1\r\nHost: 127.0.0.2:${ngUrl.port}\r\nRange: bytes=0-${2 * MiB - 1}\r\n\r\n`,
      { head: () => {}, body: (c) => { kept.push(c); copy.push(Buffer.from(c)); } });
    expect(Buffer.concat(copy).equals(data.subarray(0, 2 * MiB))).toBe(true);
    // Every chunk that owned its whole buffer is detached now (a view into a larger one, such as the chunk that also
    // carried the head, is left to the GC).
    const freed = kept.filter((c) => c.byteLength === 0).length;
    expect(freed).toBeGreaterThan(0);
    expect(freed).toBeGreaterThanOrEqual(kept.length - 1);
  } finally { conn.destroy(); }
});

test("socket reads are batched during a long body (SO_RCVLOWAT), and the next small reply on the connection is not held back", async () => {
  // The socket option itself, read back with getsockopt(2) (test-only FFI): 128 KiB while much of a body is still to
  // come, 1 byte again before the exchange ends.
  const { dlopen, FFIType, ptr } = await import("bun:ffi");
  const { getsockopt } = dlopen("libc.so.6", { getsockopt: { args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 } }).symbols;
  const val = new Int32Array(1), len = new Uint32Array([4]);
  const lowat = (fd: number) => { len[0] = 4; expect(getsockopt(fd, 1, 18, ptr(val), ptr(len))).toBe(0); return val[0]; };
  const conn = await HttpsConnection.open(ngUrl, { ca, connectTimeoutMs: 5000 });
  const fd = (conn as unknown as { sock: { fd: number } }).sock.fd;
  const get = (start: number, end: number, seen: number[] = []) => {
    const got: Buffer[] = [];
    let received = 0;
    const done = conn.exchange(`GET ${ngUrl.path} HTTP/1.1\r\nHost: 127.0.0.2:${ngUrl.port}\r\nRange: bytes=${start}-${end}\r\n\r\n`,
      { head: () => {}, body: (c) => { got.push(Buffer.from(c)); received += c.length; if (end + 1 - start - received > 1 * MiB) seen.push(lowat(fd)); } });
    return done.then(() => got);
  };
  try {
    for (let round = 0; round < 3; round++) {
      const seen: number[] = [];
      const big = await get(0, 4 * MiB - 1, seen);
      expect(Buffer.concat(big).equals(data)).toBe(true);
      expect(seen.length).toBeGreaterThan(0);
      expect(seen.every((v) => v === 128 * KiB)).toBe(true); // raised after the head, while > 1 MiB was still to come
      expect(lowat(fd)).toBe(1);
      // A 10-byte reply right after: with the mark still raised this would wait for ever.
      const small = await get(100, 109);
      expect(Buffer.concat(small).equals(data.subarray(100, 110))).toBe(true);
    }
    expect(conn.reusable).toBe(true);
  } finally { conn.destroy(); }
});

// ---- node:tls mock, for faults only ----

interface MockReq { conn: number; nth: number; start: number; end: number }
interface Mock {
  url: ImageUrl;
  requests: MockReq[];
  readonly accepted: number;   // TCP connections accepted
  readonly maxOpen: number;    // most TCP connections open at once
  close(): Promise<void>;
}
type Handler = (s: tls.TLSSocket, req: MockReq) => Promise<void> | void;

async function startMock(host: string, p: TestPki, handler: Handler): Promise<Mock> {
  let accepted = 0, open = 0, maxOpen = 0, secured = 0;
  const requests: MockReq[] = [];
  const raw = new Set<Socket>();
  const srv = tls.createServer({ cert: readFileSync(p.serverCert), key: readFileSync(p.serverKey) }, (s) => {
    s.setNoDelay(true);
    s.on("error", () => {});
    const conn = ++secured; // TLS connections in the order their handshakes completed
    let buf = Buffer.alloc(0), nth = 0, chain = Promise.resolve();
    s.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (let i; (i = buf.indexOf("\r\n\r\n")) >= 0;) {
        const text = buf.subarray(0, i + 2).toString("latin1");
        buf = buf.subarray(i + 4);
        const m = /\r\nRange: bytes=(\d+)-(\d+)\r\n/.exec(text);
        const req = { conn, nth: ++nth, start: Number(m?.[1] ?? -1), end: Number(m?.[2] ?? -1) };
        requests.push(req);
        chain = chain.then(() => handler(s, req)).catch(() => { s.destroy(); });
      }
    });
  });
  srv.on("connection", (c: Socket) => {
    accepted++; open++; maxOpen = Math.max(maxOpen, open); raw.add(c);
    c.on("close", () => { open--; raw.delete(c); });
  });
  srv.on("tlsClientError", () => {});
  await new Promise<void>((r) => srv.listen(0, host, () => r()));
  const a = srv.address();
  const port = typeof a === "object" && a ? a.port : 0;
  const mock: Mock = {
    url: parseImageUrl(`https://${host}:${port}/img.bin`),
    requests,
    get accepted() { return accepted; },
    get maxOpen() { return maxOpen; },
    close: () => new Promise<void>((r) => { for (const c of raw) c.destroy(); srv.close(() => r()); }),
  };
  closers.push(mock.close);
  return mock;
}

const write = (s: tls.TLSSocket, b: string | Uint8Array) => new Promise<void>((r) => s.write(b, () => r()));
const ETAG = '"mock"';
const replyHead = (q: MockReq, extra = "") =>
  `HTTP/1.1 206 Partial Content\r\nContent-Range: bytes ${q.start}-${q.end}/${data.length}\r\n` +
  `Content-Length: ${q.end - q.start + 1}\r\nETag: ${ETAG}\r\n${extra}\r\n`;
const bodyOf = (q: MockReq) => data.subarray(q.start, q.end + 1);
const pool = (u: ImageUrl, connections = 2, caPem: Buffer = ca) => {
  const p = new HttpsPool(u, { ca: caPem, connections, connectTimeoutMs: 5000 });
  closers.push(() => p.destroy());
  return p;
};

test("mock: a head written one byte per TLS record, after a 100 Continue also written byte by byte: data correct", async () => {
  const mock = await startMock("127.0.0.4", pki, async (s, q) => {
    const head = "HTTP/1.1 100 Continue\r\n\r\n" + replyHead(q, "Server: drip\r\nConnection: keep-alive\r\n");
    for (const ch of head) { await write(s, ch); await Bun.sleep(1); } // separate records, separate socket reads
    await write(s, bodyOf(q));
  });
  const ins = instrument();
  const p = pool(mock.url);
  try {
    let exp = await readRange(p, mock.url, 1000, 100_000);
    expect(exp).toEqual({ size: data.length, validator: ETAG });
    exp = await readRange(p, mock.url, 3 * MiB + 7, 70_000, exp); // the same connection, still in step
  } finally { ins.restore(); }
  expect(ins.stats.chunks).toBeGreaterThan(150); // the heads really arrived in many pieces
  expect(mock.accepted).toBe(1);
  expect(mock.requests.map((q) => q.nth)).toEqual([1, 2]);
}, 30_000);

test("mock: 1xx interim replies, the real head and the body all in one write", async () => {
  const mock = await startMock("127.0.0.4", pki, async (s, q) => {
    await write(s, Buffer.concat([
      Buffer.from("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n" + replyHead(q)),
      bodyOf(q),
    ]));
  });
  const p = pool(mock.url);
  const exp = await readRange(p, mock.url, 0, 1);
  await readRange(p, mock.url, 12345, 3000, exp);
  await readRange(p, mock.url, data.length - 1, 1, exp);
  expect(mock.accepted).toBe(1);
}, 30_000);

test("mock: bytes after a complete reply poison that connection only; the next request gets correct bytes", async () => {
  // The unasked bytes are a well-formed 206 for exactly the range asked next, with the wrong body: a client that
  // kept the connection would take them as the next reply.
  const next = { start: 2 * MiB, end: 2 * MiB + 4095 };
  const forged = replyHead({ conn: 0, nth: 0, ...next }) + "\0".repeat(4096);
  let sameWrite = false;
  const mock = await startMock("127.0.0.4", pki, async (s, q) => {
    if (q.nth > 1) { s.destroy(); return; } // a second request on a poisoned connection must never be sent
    if (sameWrite) { await write(s, Buffer.concat([Buffer.from(replyHead(q)), bodyOf(q), Buffer.from(forged)])); return; }
    await write(s, replyHead(q));
    await write(s, bodyOf(q));
    await Bun.sleep(30);
    await write(s, forged);
  });
  const p = pool(mock.url, 1);
  // After the reply: arrives while the connection is idle in the pool.
  const exp = await readRange(p, mock.url, 5000, 10_000);
  await Bun.sleep(300);
  expect(idleCount(p)).toBe(0); // destroyed and dropped on the unexpected bytes
  await readRange(p, mock.url, next.start, 4096, exp);
  expect(mock.accepted).toBe(2);
  expect(mock.requests.map((q) => [q.conn, q.nth])).toEqual([[1, 1], [2, 1]]);
  await Bun.sleep(300); // connection 2 is poisoned the same way
  expect(idleCount(p)).toBe(0);

  // In the same write as the body: the reply is longer than its Content-Length. That read is refused (or, if the
  // extra bytes happen to arrive in a later socket read, it succeeds and they poison an idle connection as above).
  sameWrite = true;
  const before = mock.accepted;
  const first = await getRange(p, mock.url, 7000, 2000, T, exp, true).catch((e) => e);
  if (first instanceof SourceFault) expect(first.message).toMatch(/^bad HTTP reply: body longer than its Content-Length \(\d+ extra bytes\)$/);
  else expect(Buffer.concat(first.parts).equals(data.subarray(7000, 9000))).toBe(true);
  await Bun.sleep(300);
  sameWrite = false;
  await readRange(p, mock.url, next.start, 4096, exp);
  expect(mock.accepted).toBe(before + 2);
  expect(mock.requests.every((q) => q.nth === 1)).toBe(true);
}, 30_000);

test("mock: a certificate that does not name the address is refused before any request is sent", async () => {
  const narrow = makeTestPki(join(dir, "pki9"), ["127.0.0.9"], "Narrow CA");
  const caNarrow = readFileSync(narrow.caCert);
  const wrong = await startMock("127.0.0.8", narrow, (s, q) => { s.write(replyHead(q)); s.write(bodyOf(q)); });
  const right = await startMock("127.0.0.9", narrow, (s, q) => { s.write(replyHead(q)); s.write(bodyOf(q)); });

  const e = await getRange(pool(wrong.url, 2, caNarrow), wrong.url, 0, 1, T, undefined, true).catch((x) => x);
  expect(e).toBeInstanceOf(SourceFault);
  expect(e.message).toBe("TLS: certificate is not valid for 127.0.0.8");
  const direct = await HttpsConnection.open(wrong.url, { ca: caNarrow, connectTimeoutMs: 5000 }).catch((x) => x);
  expect(direct.code).toBe("ERR_TLS_CERT_ALTNAME_INVALID");
  expect(wrong.accepted).toBe(2);
  expect(wrong.requests).toEqual([]); // nothing was sent over the unverified connections
  // Control: the same certificate and CA at the address it names.
  await readRange(pool(right.url, 2, caNarrow), right.url, 100, 1000);
}, 30_000);

test("mock: pool limit 2 with 8 concurrent reads: never more than 2 TCP connections, FIFO, all 8 correct", async () => {
  const mock = await startMock("127.0.0.5", pki, async (s, q) => {
    await Bun.sleep(40); // keep each connection busy so the other reads must queue
    await write(s, replyHead(q));
    await write(s, bodyOf(q));
  });
  const p = pool(mock.url, 2);
  const offs = Array.from({ length: 8 }, (_, i) => i * 300_000 + 17);
  await Promise.all(offs.map((o) => readRange(p, mock.url, o, 100_000)));
  expect(mock.accepted).toBe(2);
  expect(mock.maxOpen).toBe(2);
  expect(mock.requests).toHaveLength(8);
  // Waiters are served in order: request i reaches the server at most one place away from i (two connections race).
  mock.requests.forEach((q, arrived) => expect(Math.abs(offs.indexOf(q.start) - arrived)).toBeLessThanOrEqual(1));
  // Again after the pool is warm: the 2 idle connections are reused, no new ones.
  await Promise.all(offs.map((o) => readRange(p, mock.url, o + 1, 50_000)));
  expect(mock.accepted).toBe(2);
  expect(mock.maxOpen).toBe(2);
}, 30_000);

test("mock: a reused connection killed as the request arrives is retried once on a fresh one; a fresh one is not retried", async () => {
  let killAll = false;
  const mock = await startMock("127.0.0.6", pki, async (s, q) => {
    if (killAll || q.nth > 1) { s.destroy(); return; } // like a keep-alive timeout firing just as the request came in
    await write(s, replyHead(q));
    await write(s, bodyOf(q));
  });
  const p = pool(mock.url, 1);
  const exp = await readRange(p, mock.url, 0, 4096);
  await readRange(p, mock.url, 4096, 4096, exp); // reused: killed; retried on connection 2: served
  expect(mock.requests.map((q) => [q.conn, q.nth])).toEqual([[1, 1], [1, 2], [2, 1]]);

  // Reused and killed, and the retry killed too: a fault after exactly two attempts (no retry loop).
  killAll = true;
  const n = mock.requests.length;
  const e1 = await getRange(p, mock.url, 8192, 4096, T, exp, true).catch((x) => x);
  expect(e1).toBeInstanceOf(SourceFault);
  expect(mock.requests.length - n).toBe(2);

  // A fresh connection killed before replying is the server's fault: one attempt only.
  const fresh = pool(mock.url, 1);
  const m = mock.requests.length;
  const e2 = await getRange(fresh, mock.url, 0, 1, T, undefined, true).catch((x) => x);
  expect(e2).toBeInstanceOf(SourceFault);
  expect(mock.requests.length - m).toBe(1);
}, 30_000);

test("mock: a stall that fires during a slow TLS handshake still ends the read (no hang on a silent server)", async () => {
  // The server accepts requests and never answers; a delaying relay makes the handshake outlast the stall limit.
  const mock = await startMock("127.0.0.7", pki, () => new Promise<void>(() => {}));
  const relay = await startRelay({ listenHost: "127.0.0.7", targetHost: "127.0.0.7", targetPort: mock.url.port, delayMs: 250 });
  closers.push(relay.close);
  const u = parseImageUrl(`https://127.0.0.7:${relay.port}/img.bin`);
  const t0 = performance.now();
  const outcome = await Promise.race([
    getRange(pool(u, 1), u, 0, 1, { stallMs: 300, requestMs: 4000 }, undefined, true).then(() => "data", (e) => e),
    Bun.sleep(8000).then(() => "still waiting after 8 s"),
  ]);
  expect(outcome).toBeInstanceOf(SourceFault);
  expect((outcome as SourceFault).message).toMatch(/^stalled for 0\.3 s$|^no complete reply within 4 s$/);
  expect(performance.now() - t0).toBeLessThan(5000);
}, 30_000);
