// Strict parsers for the HTTP reply headers the range engine trusts: Content-Range, ETag, Last-Modified.
// They come from the network, so anything unexpected is a HeaderError, never a guess.

export class HeaderError extends Error {
  override name = "HeaderError";
}

export interface ContentRange { start: number; end: number; size: number } // end inclusive

const show = (v: string) => JSON.stringify(v.length > 80 ? v.slice(0, 80) + "…" : v);

function safeInt(digits: string, what: string, raw: string): number {
  // Digits only, no sign or exponent; 15 digits stay far inside Number.MAX_SAFE_INTEGER.
  if (!/^[0-9]{1,15}$/.test(digits)) throw new HeaderError(`bad ${what} in Content-Range ${show(raw)}`);
  return Number(digits);
}

/** Parses "bytes START-END/SIZE" (RFC 9110 §14.4); rejects unknown sizes ("*") and inconsistent numbers. */
export function parseContentRange(value: unknown): ContentRange {
  if (typeof value !== "string") throw new HeaderError("missing Content-Range");
  const m = /^bytes ([^-/]*)-([^/]*)\/(.*)$/.exec(value.trim());
  if (!m) throw new HeaderError(`malformed Content-Range ${show(value)}`);
  const start = safeInt(m[1], "start", value), end = safeInt(m[2], "end", value), size = safeInt(m[3], "size", value);
  if (start > end || end >= size) throw new HeaderError(`inconsistent Content-Range ${show(value)}`);
  return { start, end, size };
}

/** Returns the strong ETag as sent (with quotes), or undefined for none/weak; throws on a malformed one. */
export function parseStrongEtag(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string") throw new HeaderError("more than one ETag header");
  const v = value.trim();
  if (/^W\/"[\x21\x23-\x7e]*"$/.test(v)) return undefined; // weak: not a byte-for-byte guarantee
  if (!/^"[\x21\x23-\x7e]{0,200}"$/.test(v)) throw new HeaderError(`malformed ETag ${show(value)}`);
  return v;
}

/** Returns Last-Modified normalised to an ISO date, or undefined when absent; throws on an unparsable date. */
export function parseLastModified(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string") throw new HeaderError("more than one Last-Modified header");
  // IMF-fixdate only (what every current server sends): "Sun, 06 Nov 1994 08:49:37 GMT".
  if (!/^[A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT$/.test(value.trim())) {
    throw new HeaderError(`malformed Last-Modified ${show(value)}`);
  }
  const t = Date.parse(value);
  if (!Number.isFinite(t)) throw new HeaderError(`malformed Last-Modified ${show(value)}`);
  return new Date(t).toISOString();
}

/** The validator of a reply with neither a strong ETag nor Last-Modified (can never equal a real one). */
export const NO_VALIDATOR = "none";

/**
 * The image validator from reply headers: the strong ETag, else "Last-Modified <iso>", else NO_VALIDATOR. A server
 * with no validator cannot tell us when the image changes: the range engine accepts one only when a signed manifest
 * verifies every chunk (src/source/image.ts).
 */
export function validatorOf(headers: Record<string, string | string[] | undefined>): string {
  const etag = parseStrongEtag(headers["etag"]);
  if (etag !== undefined) return etag;
  const lm = parseLastModified(headers["last-modified"]);
  if (lm !== undefined) return `Last-Modified ${lm}`;
  return NO_VALIDATOR;
}
