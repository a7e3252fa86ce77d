// The strict HTTP/1.1 response-head parser (src/source/response.ts): its input is untrusted network bytes, so besides
// the unit cases every malformed shape must be a ReplyError (never another exception, never a guessed result), and a
// seeded fuzz loop checks that whatever is accepted is consistent.
import { expect, test } from "bun:test";
import {
  MAX_HEAD_BYTES, ReplyError, bodyLength, closesAfter, findHeadEnd, keepAliveMs, parseResponseHead, type ResponseHead,
} from "../../src/source/response";

const bytes = (s: string) => new Uint8Array(Buffer.from(s, "latin1"));
const parse = (s: string) => parseResponseHead(bytes(s));
const head = (status: string, fields: string[]) => `${status}\r\n${fields.map((f) => `${f}\r\n`).join("")}\r\n`;

// Modelled on what nginx and Apache 2.4 (Debian) send for a range request: same fields, order and spelling.
const NGINX = head("HTTP/1.1 206 Partial Content", [
  "Server: nginx/1.22.1", "Date: Wed, 25 Nov 2026 17:44:23 GMT", "Content-Type: application/octet-stream",
  "Content-Length: 131072", "Last-Modified: Tue, 14 Nov 2023 22:13:20 GMT", "Connection: keep-alive",
  'ETag: "6553f100-800000"', "Content-Range: bytes 131072-262143/8388608",
]);
const APACHE = head("HTTP/1.1 206 Partial Content", [
  "Date: Wed, 25 Nov 2026 17:44:23 GMT", "Server: Apache/2.4.71 (Debian)", "Last-Modified: Tue, 14 Nov 2023 22:13:20 GMT",
  'ETag: "800000-60a2242d3c400"', "Accept-Ranges: bytes", "Content-Length: 21",
  "Content-Range: bytes 1048570-1048590/8388608", "Keep-Alive: timeout=5, max=100", "Connection: Keep-Alive",
  "Content-Type: application/octet-stream",
]);

test("nginx-like and Apache-like range replies parse exactly", () => {
  const n = parse(NGINX);
  expect(n.status).toBe(206);
  expect(n.headers).toEqual({
    server: "nginx/1.22.1", date: "Wed, 25 Nov 2026 17:44:23 GMT", "content-type": "application/octet-stream",
    "content-length": "131072", "last-modified": "Tue, 14 Nov 2023 22:13:20 GMT", connection: "keep-alive",
    etag: '"6553f100-800000"', "content-range": "bytes 131072-262143/8388608",
  });
  expect(bodyLength(n)).toBe(131072);
  expect(closesAfter(n)).toBe(false);
  expect(keepAliveMs(n)).toBeUndefined();

  const a = parse(APACHE);
  expect(a.status).toBe(206);
  expect(a.headers["content-range"]).toBe("bytes 1048570-1048590/8388608");
  expect(a.headers["keep-alive"]).toBe("timeout=5, max=100");
  expect(bodyLength(a)).toBe(21);
  expect(closesAfter(a)).toBe(false);
  expect(keepAliveMs(a)).toBe(5000);
  // Apache's last request on a connection (MaxKeepAliveRequests reached).
  const last = parse(APACHE.replace("Keep-Alive: timeout=5, max=100\r\nConnection: Keep-Alive", "Connection: close"));
  expect(closesAfter(last)).toBe(true);
  expect(keepAliveMs(last)).toBeUndefined();
});

test("status line: HTTP/1.0 and 1.1, any reason phrase (or none), every class 1xx..5xx", () => {
  expect(parse(head("HTTP/1.1 200 OK", ["Content-Length: 0"])).status).toBe(200);
  expect(parse(head("HTTP/1.0 404 Not Found", [])).status).toBe(404);
  expect(parse(head("HTTP/1.1 206", [])).status).toBe(206);            // reason-phrase is optional ...
  expect(parse(head("HTTP/1.1 206 ", [])).status).toBe(206);           // ... and may be empty
  expect(parse(head("HTTP/1.1 100 Continue", [])).status).toBe(100);
  expect(parse(head("HTTP/1.1 599 \tweird\xe9 reason", [])).status).toBe(599); // HTAB, obs-text in the reason
  expect(parse("HTTP/1.1 204 No Content\r\n\r\n").headers).toEqual({});
  for (const c of [100, 101, 199, 200, 206, 301, 416, 500, 503, 599]) expect(parse(head(`HTTP/1.1 ${c} x`, [])).status).toBe(c);
});

test("field names are case-insensitive (stored lower-case), OWS around values is trimmed, repeats become arrays", () => {
  const h = parse(head("HTTP/1.1 206 Partial Content", [
    "CONTENT-LENGTH: 5", "X-Empty:", "X-Spaces: \t  a  b \t ", "x-multi: one", "X-Multi: two", "X-MULTI:three",
    "Set-Cookie: a=1", "set-cookie: b=2", "X-Obs-Text: caf\xe9", "X-Colons: a:b::c", "!#$%&'*+.^_`|~09azAZ-: token chars",
  ]));
  expect(h.headers["content-length"]).toBe("5");
  expect(h.headers["CONTENT-LENGTH"]).toBeUndefined();
  expect(h.headers["x-empty"]).toBe("");
  expect(h.headers["x-spaces"]).toBe("a  b"); // inner whitespace is part of the value
  expect(h.headers["x-multi"]).toEqual(["one", "two", "three"]);
  expect(h.headers["set-cookie"]).toEqual(["a=1", "b=2"]);
  expect(h.headers["x-obs-text"]).toBe("caf\xe9"); // latin1: one char per byte
  expect(h.headers["x-colons"]).toBe("a:b::c");
  expect(h.headers["!#$%&'*+.^_`|~09azaz-"]).toBe("token chars");
  // The map has no prototype: a field called __proto__ or constructor is just a field.
  const p = parse(head("HTTP/1.1 200 OK", ["__proto__: x", "Constructor: y", "toString: z"]));
  expect(p.headers["__proto__"]).toBe("x");
  expect(p.headers["constructor"]).toBe("y");
  expect(p.headers["tostring"]).toBe("z");
  expect(Object.keys(p.headers).sort()).toEqual(["__proto__", "constructor", "tostring"]);
});

test("a head inside a larger buffer (non-zero byteOffset) parses the same", () => {
  const big = new Uint8Array(100 + NGINX.length + 50).fill(0x41);
  big.set(bytes(NGINX), 100);
  expect(parseResponseHead(big.subarray(100, 100 + NGINX.length))).toEqual(parse(NGINX));
});

const rejects = (s: string | Uint8Array, re: RegExp) => {
  const b = typeof s === "string" ? bytes(s) : s;
  let err: unknown;
  try { parseResponseHead(b); } catch (e) { err = e; }
  expect(err, JSON.stringify(typeof s === "string" ? s.slice(0, 80) : "bytes")).toBeInstanceOf(ReplyError);
  expect((err as Error).message).toMatch(re);
};

test("malformed status lines are refused", () => {
  for (const s of [
    "HTTP/2 206 Partial Content", "HTTP/2.0 206 x", "HTTP/1.2 206 x", "HTTP/1 206 x", "HTTP/1.1 2060 x", "HTTP/1.1 20 x",
    "HTTP/1.1 099 x", "HTTP/1.1 000 x", "HTTP/1.1 600 x", "HTTP/1.1 999 x", "HTTP/1.1  206 x", "HTTP/1.1\t206 x",
    "http/1.1 206 x", " HTTP/1.1 206 x", "HTTP/1.1 206x", "HTTP/1.1 20a x", "HTTP/1.1 +20 x", "HTTP/1.1 -20 x",
    "HTTP/1.1 206 x\x00y", "HTTP/1.1 206 x\x7f", "HTTP/1.1 206 x\x1b[31m", "HTTP/1.1 206 x\ry", "HTTP/1.1 206 x\ny",
    "ICY 200 OK", "HTTP/1.1", "", "SSH-2.0-OpenSSH_9.2", "\x16\x03\x01\x02\x00",
  ]) rejects(head(s, ["Content-Length: 1"]), /^malformed status line /);
  // Bare LF line ends are not HTTP/1.1 as a server must send it: no CRLF CRLF, or a status line containing LF.
  rejects("HTTP/1.1 200 OK\nContent-Length: 0\n\n", /not terminated|malformed/);
});

test("malformed field lines are refused: obs-fold, whitespace before the colon, no colon, bad names", () => {
  const cases: [string, RegExp][] = [
    [" folded", /^malformed header line /],                 // obs-fold (continuation of the previous line)
    ["\tfolded", /^malformed header line /],
    ["Content-Length : 5", /^malformed header name /],      // RFC 9112 §5.1: no whitespace between name and colon
    ["Content-Length\t: 5", /^malformed header name /],
    [": value", /^malformed header line /],                 // empty name
    ["NoColonHere", /^malformed header line /],
    ["", /^malformed header line /],                        // an empty line inside the head
    ["Bad Name: x", /^malformed header name /],
    ["Bad(Name): x", /^malformed header name /],
    ["Bad/Name: x", /^malformed header name /],
    ["Bäd: x", /^malformed header name /],
    ["Bad\x00: x", /^malformed header name /],
    ["X\x7f: x", /^malformed header name /],
  ];
  for (const [line, re] of cases) rejects(head("HTTP/1.1 200 OK", ["Server: t", line, "Content-Length: 0"]), re);
});

test("control characters, NUL, bare CR or LF and DEL in a value are refused", () => {
  for (const v of ["a\x00b", "\x00", "a\rb", "a\nb", "a\x7fb", "a\x1bb", "a\x01", "\x0bx", "x\x0c", "a\r", "ok\r\n\x00"]) {
    rejects(head("HTTP/1.1 206 Partial Content", [`X-Test: ${v}`, "Content-Length: 1"]), /^control character in header "X-Test"$|^malformed header line/);
  }
  // A lone CR at the very end of a field line looks almost like the terminator: still refused, not re-split.
  rejects("HTTP/1.1 200 OK\r\nX: a\r\r\n\r\n", /^control character in header "X"$/);
  // An LF-only "line" inside a CRLF head: the text after LF would be a smuggled field if it were split on LF.
  rejects("HTTP/1.1 200 OK\r\nX: a\nContent-Length: 99\r\nContent-Length: 1\r\n\r\n", /^control character in header "X"$/);
});

test("the head must end in an empty line; longer than 16 KiB or more than 100 fields is refused", () => {
  rejects("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", /^reply header not terminated by an empty line$/);
  rejects("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r", /not terminated/);
  rejects("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nX", /not terminated/);
  rejects("", /not terminated/);

  const pad = (total: number) => { // a valid head of exactly `total` bytes
    const base = "HTTP/1.1 200 OK\r\nX-Pad: \r\n\r\n";
    return base.replace("X-Pad: ", `X-Pad: ${"p".repeat(total - base.length)}`);
  };
  expect(pad(MAX_HEAD_BYTES).length).toBe(MAX_HEAD_BYTES);
  expect(parse(pad(MAX_HEAD_BYTES)).headers["x-pad"]).toHaveLength(MAX_HEAD_BYTES - 28);
  rejects(pad(MAX_HEAD_BYTES + 1), /^reply header longer than 16384 bytes$/);
  rejects(pad(1 << 20), /^reply header longer than 16384 bytes$/);

  const fields = (n: number) => Array.from({ length: n }, (_, i) => `X-F${i}: ${i}`);
  expect(Object.keys(parse(head("HTTP/1.1 200 OK", fields(100))).headers)).toHaveLength(100);
  rejects(head("HTTP/1.1 200 OK", fields(101)), /^more than 100 header fields$/);
  // Repeats count too (they are separate field lines); an array cannot grow past 100 entries.
  rejects(head("HTTP/1.1 200 OK", Array(101).fill("X: y")), /^more than 100 header fields$/);
  expect(parse(head("HTTP/1.1 200 OK", Array(100).fill("X: y"))).headers.x).toHaveLength(100);
});

const withFields = (...f: string[]): ResponseHead => parse(head("HTTP/1.1 206 Partial Content", f));

test("bodyLength: exactly one Content-Length of digits, no Transfer-Encoding", () => {
  expect(bodyLength(withFields("Content-Length: 0"))).toBe(0);
  expect(bodyLength(withFields("Content-Length:1048576"))).toBe(1048576);
  expect(bodyLength(withFields("content-length:   42   "))).toBe(42);
  expect(bodyLength(withFields("Content-Length: 007"))).toBe(7);
  expect(bodyLength(withFields("Content-Length: 999999999999999"))).toBe(999999999999999); // 15 digits: still exact
  const bad: [string[], RegExp][] = [
    [[], /^reply has no Content-Length$/],
    [["Content-Length: 5", "Content-Length: 5"], /^reply has more than one Content-Length$/], // even equal copies
    [["Content-Length: 5", "content-length: 6"], /^reply has more than one Content-Length$/],
    [["Content-Length: "], /^malformed Content-Length ""$/],
    [["Content-Length: -1"], /^malformed Content-Length/],
    [["Content-Length: +5"], /^malformed Content-Length/],
    [["Content-Length: 1e3"], /^malformed Content-Length/],
    [["Content-Length: 0x10"], /^malformed Content-Length/],
    [["Content-Length: 5 5"], /^malformed Content-Length/],
    [["Content-Length: 5,5"], /^malformed Content-Length/],
    [["Content-Length: 5.0"], /^malformed Content-Length/],
    [["Content-Length: ５"], /^malformed Content-Length/],   // U+FF15 as UTF-8 bytes, read as latin1
    [["Content-Length: 1234567890123456"], /^malformed Content-Length/], // 16 digits: beyond what we accept
    [["Content-Length: 99999999999999999999999"], /^malformed Content-Length/],
    [["Transfer-Encoding: chunked"], /^reply uses Transfer-Encoding instead of a Content-Length$/],
    [["Transfer-Encoding: chunked", "Content-Length: 5"], /Transfer-Encoding/], // the classic smuggling pair
    [["Content-Length: 5", "transfer-encoding: identity"], /Transfer-Encoding/],
    [["Transfer-Encoding:"], /Transfer-Encoding/],
  ];
  for (const [f, re] of bad) {
    let err: unknown;
    try { bodyLength(withFields(...f.map((x) => Buffer.from(x, "utf8").toString("latin1")))); } catch (e) { err = e; }
    expect(err, f.join(" | ")).toBeInstanceOf(ReplyError);
    expect((err as Error).message).toMatch(re);
  }
});

test("closesAfter and keepAliveMs read Connection and Keep-Alive tokens, case-insensitively", () => {
  expect(closesAfter(withFields("Connection: close"))).toBe(true);
  expect(closesAfter(withFields("Connection: Close"))).toBe(true);
  expect(closesAfter(withFields("Connection: keep-alive, close"))).toBe(true);
  expect(closesAfter(withFields("Connection: TE,CLOSE"))).toBe(true);
  expect(closesAfter(withFields("Connection: keep-alive", "Connection: close"))).toBe(true);
  expect(closesAfter(withFields("Connection: keep-alive"))).toBe(false);
  expect(closesAfter(withFields("Connection: closed"))).toBe(false);
  expect(closesAfter(withFields("Connection: x-close"))).toBe(false);
  expect(closesAfter(withFields("X-Connection: close"))).toBe(false);
  expect(closesAfter(withFields())).toBe(false);

  expect(keepAliveMs(withFields("Keep-Alive: timeout=5, max=100"))).toBe(5000);
  expect(keepAliveMs(withFields("Keep-Alive: max=3, timeout=1"))).toBe(1000);
  expect(keepAliveMs(withFields("Keep-Alive: TIMEOUT=2"))).toBe(2000);
  expect(keepAliveMs(withFields("Keep-Alive: timeout=0"))).toBe(0);
  expect(keepAliveMs(withFields("Keep-Alive: max=9", "Keep-Alive: timeout=7"))).toBe(7000);
  expect(keepAliveMs(withFields("Keep-Alive: timeout=5x"))).toBeUndefined();
  expect(keepAliveMs(withFields("Keep-Alive: xtimeout=5"))).toBeUndefined();
  expect(keepAliveMs(withFields("Keep-Alive: timeout=1234567"))).toBeUndefined(); // absurd: ignored, our own limit applies
  expect(keepAliveMs(withFields("Keep-Alive: timeout=-1"))).toBeUndefined();
  expect(keepAliveMs(withFields("Keep-Alive: max=5"))).toBeUndefined();
  expect(keepAliveMs(withFields())).toBeUndefined();
});

test("findHeadEnd: the terminator is found wherever the bytes are split, and never early", () => {
  const body = "\r\n\r\nBODY\r\n\r\n"; // a body that itself contains CRLFCRLF: only the first one ends the head
  for (const h of [NGINX, APACHE, "HTTP/1.1 200 OK\r\n\r\n", "HTTP/1.1 100 Continue\r\n\r\n"]) {
    const all = bytes(h + body);
    const end = h.length;
    expect(findHeadEnd(all, all.length)).toBe(end);
    // Every prefix short of the full terminator is "not yet".
    for (let len = 0; len < end; len++) expect(findHeadEnd(all, len)).toBe(-1);
    // Two chunks split at every position p; the second search resumes from p as conn.ts does.
    for (let p = 0; p <= all.length; p++) {
      const first = findHeadEnd(all, p);
      if (p >= end) { expect(first).toBe(end); continue; }
      expect(first).toBe(-1);
      expect(findHeadEnd(all, all.length, p)).toBe(end);
    }
    // One byte per chunk, resuming after each.
    let found = -1;
    for (let len = 1; len <= all.length && found < 0; len++) found = findHeadEnd(all, len, len - 1);
    expect(found).toBe(end);
    // Three chunks at every pair of split points around the terminator (the interesting region).
    for (let p = Math.max(0, end - 6); p <= end; p++) {
      for (let q = p; q <= end + 2; q++) {
        let r = findHeadEnd(all, p);
        if (r < 0) r = findHeadEnd(all, q, p);
        if (r < 0) r = findHeadEnd(all, all.length, q);
        expect(r).toBe(end);
      }
    }
  }
  // Near misses are not terminators.
  for (const s of ["\r\n\r", "\n\r\n\r", "\r\r\n\n", "\r\n\n\r\n", "\r\n \r\n", "\n\n", "\r\r", "\r\n\r\x00\n"]) {
    expect(findHeadEnd(bytes(s), s.length)).toBe(-1);
  }
  expect(findHeadEnd(bytes("\r\n\r\n"), 4)).toBe(4);
  expect(findHeadEnd(bytes("\r\n\r\n"), 3)).toBe(-1); // `length` bounds the search, not the buffer
  expect(findHeadEnd(bytes("x\r\r\n\r\n"), 6)).toBe(6);
  expect(findHeadEnd(new Uint8Array(0), 0)).toBe(-1);
  expect(findHeadEnd(bytes("ab\r\n\r\n"), 6, 100)).toBe(-1); // resuming past the end finds nothing (and does not throw)
});

function rng(seed: number) {
  return () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x80000000; };
}

/** Checks an accepted head against everything the rest of the client relies on. */
function checkConsistent(buf: Uint8Array, h: ResponseHead): void {
  expect(Number.isInteger(h.status) && h.status >= 100 && h.status <= 599).toBe(true);
  expect(Object.getPrototypeOf(h.headers)).toBeNull();
  // An accepted head has no earlier blank line: findHeadEnd on it finds exactly its end.
  expect(findHeadEnd(buf, buf.length)).toBe(buf.length);
  expect(buf.length).toBeLessThanOrEqual(MAX_HEAD_BYTES);
  const names = Object.keys(h.headers);
  expect(names.length).toBeLessThanOrEqual(100);
  for (const name of names) {
    expect(/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(name)).toBe(true);
    const v = h.headers[name];
    const values = Array.isArray(v) ? v : [v];
    if (Array.isArray(v)) expect(v.length).toBeGreaterThanOrEqual(2);
    for (const x of values) {
      expect(typeof x).toBe("string");
      expect(/[\r\n\x00]/.test(x)).toBe(false);
      expect(/^[ \t]|[ \t]$/.test(x)).toBe(false);
    }
  }
  for (const f of [() => bodyLength(h), () => closesAfter(h), () => keepAliveMs(h)]) {
    try {
      const out = f();
      if (typeof out === "number") expect(Number.isSafeInteger(out) && out >= 0).toBe(true);
    } catch (e) {
      if (!(e instanceof ReplyError)) throw new Error(`non-ReplyError from a helper: ${e}`);
    }
  }
}

test("fuzz: random bytes and mutated valid heads only ever throw ReplyError or parse consistently", () => {
  const r = rng(20261125);
  const pick = <T>(a: ArrayLike<T>) => a[Math.floor(r() * a.length)];
  // Bytes weighted toward what matters to the grammar.
  const alphabet = bytes("\r\n\r\n\r\n:: \t\x00\x7f\x80\xffHTTP/1.1 206 Content-Length: 0123456789,=close timeout;\"-aZ_()");
  const seeds = [NGINX, APACHE, "HTTP/1.1 100 Continue\r\n\r\n", head("HTTP/1.0 200 OK", ["Content-Length: 3", "Connection: close"]),
    head("HTTP/1.1 206 x", ["Transfer-Encoding: chunked", "Content-Length: 1", "Keep-Alive: timeout=3"])].map(bytes);
  let accepted = 0, refused = 0;
  for (let i = 0; i < 20_000; i++) {
    let buf: Uint8Array;
    if (i % 2) {
      buf = Uint8Array.from({ length: Math.floor(r() * 300) }, () => pick(alphabet));
      if (r() < 0.5) buf = Uint8Array.from([...bytes("HTTP/1.1 206 Partial Content\r\n"), ...buf, ...bytes("\r\n\r\n")]);
    } else {
      const a = [...pick(seeds)];
      for (let k = 1 + Math.floor(r() * 4); k > 0; k--) {
        const pos = Math.floor(r() * (a.length + 1));
        const op = r();
        if (op < 0.3) a[Math.min(pos, a.length - 1)] = pick(alphabet);          // replace one byte
        else if (op < 0.55) a.splice(pos, 0, pick(alphabet));                   // insert one
        else if (op < 0.75) a.splice(pos, 1 + Math.floor(r() * 3));             // delete a few
        else if (op < 0.85) a.splice(pos, 0, ...bytes(pick(["\r\n", " ", ":", "\r\n\r\n", "\r\n ", "\x00"]))); // structure
        else if (op < 0.95) { const s = Math.floor(r() * a.length); a.splice(pos, 0, ...a.slice(s, s + 40)); } // duplicate a run
        else a.length = pos;                                                    // truncate
      }
      buf = Uint8Array.from(a);
    }
    // As conn.ts uses it: the head is what findHeadEnd delimits; also the raw buffer as a whole.
    const end = findHeadEnd(buf, buf.length);
    expect(end === -1 || (end >= 4 && end <= buf.length)).toBe(true);
    for (const candidate of end > 0 && end < buf.length ? [buf.subarray(0, end), buf] : [buf]) {
      let h: ResponseHead;
      try {
        h = parseResponseHead(candidate);
      } catch (e) {
        if (!(e instanceof ReplyError)) throw new Error(`non-ReplyError for ${JSON.stringify(Buffer.from(candidate).toString("latin1"))}: ${e}`);
        refused++;
        continue;
      }
      accepted++;
      checkConsistent(candidate, h);
    }
  }
  // The mutations keep a good share of heads valid, so the consistency checks did run.
  expect(accepted).toBeGreaterThan(1000);
  expect(refused).toBeGreaterThan(1000);
});

test("property: generated valid heads round-trip field by field", () => {
  const r = rng(99);
  const tchar = "!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-";
  const vchar = Array.from({ length: 256 }, (_, c) => String.fromCharCode(c)).filter((c) => /[\t\x20-\x7e\x80-\xff]/.test(c)).join("");
  const str = (chars: string, min: number, max: number) =>
    Array.from({ length: min + Math.floor(r() * (max - min + 1)) }, () => chars[Math.floor(r() * chars.length)]).join("");
  for (let i = 0; i < 2000; i++) {
    const status = 100 + Math.floor(r() * 500);
    const expected: Record<string, string[]> = {};
    const lines: string[] = [];
    for (let n = Math.floor(r() * 30); n > 0; n--) {
      const name = r() < 0.2 && lines.length ? lines[Math.floor(r() * lines.length)].split(":")[0] : str(tchar, 1, 20);
      const value = str(vchar, 0, 40).replace(/^[ \t]+|[ \t]+$/g, "");
      const ows = () => str(" \t", 0, 3);
      lines.push(`${name}:${ows()}${value}${ows()}`);
      (expected[name.toLowerCase()] ??= []).push(value);
    }
    const text = head(`HTTP/1.${i % 2} ${status} ${str(vchar, 0, 20)}`, lines);
    const h = parse(text);
    expect(h.status).toBe(status);
    const want = Object.fromEntries(Object.entries(expected).map(([k, v]) => [k, v.length === 1 ? v[0] : v]));
    expect({ ...h.headers }).toEqual(want);
    checkConsistent(bytes(text), h);
  }
});
