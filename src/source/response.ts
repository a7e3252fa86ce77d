// Strict parser for an HTTP/1.1 response head (status line + header fields) as an image server sends it. The bytes come
// from the network, so anything outside RFC 9112's grammar or our limits is a ReplyError, never a guess.

export class ReplyError extends Error {
  override name = "ReplyError";
}

export type HeaderMap = Record<string, string | string[]>; // lower-case names; a repeated field becomes an array

export interface ResponseHead {
  status: number;
  headers: HeaderMap;
}

export const MAX_HEAD_BYTES = 16 * 1024; // nginx/Apache range replies are ~300 bytes
const MAX_FIELDS = 100;
const TOKEN_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const STATUS_RE = /^HTTP\/1\.[01] ([1-5][0-9]{2})(?: [\t\x20-\x7e\x80-\xff]*)?$/;
const VALUE_RE = /^[\t\x20-\x7e\x80-\xff]*$/; // field-vchar, SP, HTAB, obs-text; no CR/LF/NUL

const show = (s: string) => JSON.stringify(s.length > 60 ? s.slice(0, 60) + "…" : s);

/**
 * Index just past the blank line ending the head in `buf[0, length)`, or -1 when it is not complete yet.
 * `from` lets a caller resume the search after appending more bytes.
 */
export function findHeadEnd(buf: Uint8Array, length: number, from = 0): number {
  for (let i = Math.max(0, from - 3); i + 3 < length; i++) {
    if (buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) return i + 4;
  }
  return -1;
}

/** Parses a complete head (status line, fields, blank line: exactly what findHeadEnd delimited). */
export function parseResponseHead(head: Uint8Array): ResponseHead {
  if (head.length > MAX_HEAD_BYTES) throw new ReplyError(`reply header longer than ${MAX_HEAD_BYTES} bytes`);
  // latin1: one char per byte, so no byte can turn into a CR/LF or vanish in decoding.
  const text = Buffer.from(head.buffer, head.byteOffset, head.length).toString("latin1");
  if (!text.endsWith("\r\n\r\n")) throw new ReplyError("reply header not terminated by an empty line");
  const lines = text.slice(0, -4).split("\r\n");
  const m = STATUS_RE.exec(lines[0]);
  if (!m) throw new ReplyError(`malformed status line ${show(lines[0])}`);
  if (lines.length - 1 > MAX_FIELDS) throw new ReplyError(`more than ${MAX_FIELDS} header fields`);
  const headers: HeaderMap = Object.create(null);
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    const colon = line.indexOf(":");
    // No obs-fold (a line starting with SP/HTAB), no whitespace before the colon (RFC 9112 §5.1: reject).
    if (colon <= 0) throw new ReplyError(`malformed header line ${show(line)}`);
    const name = line.slice(0, colon);
    if (!TOKEN_RE.test(name)) throw new ReplyError(`malformed header name ${show(name)}`);
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "");
    if (!VALUE_RE.test(value)) throw new ReplyError(`control character in header ${show(name)}`);
    const key = name.toLowerCase();
    const had = headers[key];
    headers[key] = had === undefined ? value : Array.isArray(had) ? [...had, value] : [had, value];
  }
  return { status: Number(m[1]), headers };
}

/**
 * How many body bytes follow the head: the Content-Length, exactly one, digits only. A reply framed any other way
 * (chunked, or delimited by closing the connection) is refused: an image server answers a range with a length.
 */
export function bodyLength(h: ResponseHead): number {
  if (h.headers["transfer-encoding"] !== undefined) throw new ReplyError("reply uses Transfer-Encoding instead of a Content-Length");
  const cl = h.headers["content-length"];
  if (cl === undefined) throw new ReplyError("reply has no Content-Length");
  if (Array.isArray(cl)) throw new ReplyError("reply has more than one Content-Length");
  if (!/^[0-9]{1,15}$/.test(cl)) throw new ReplyError(`malformed Content-Length ${show(cl)}`);
  return Number(cl);
}

/** True when the server will close the connection after this reply (it must not be reused). */
export function closesAfter(h: ResponseHead): boolean {
  const c = h.headers["connection"];
  const tokens = (Array.isArray(c) ? c.join(",") : c ?? "").toLowerCase().split(",").map((t) => t.trim());
  return tokens.includes("close");
}

/** The server's keep-alive idle timeout in ms ("Keep-Alive: timeout=5"), when it announces one. */
export function keepAliveMs(h: ResponseHead): number | undefined {
  const k = h.headers["keep-alive"];
  const m = /(?:^|[,\s])timeout=([0-9]{1,6})(?:$|[,\s])/i.exec(Array.isArray(k) ? k.join(",") : k ?? "");
  return m ? Number(m[1]) * 1000 : undefined;
}
