// Static serving of content-addressed images and manifests (GET/HEAD /images/<sha256>.{sfs,manifest}) with single
// byte ranges, conditional requests and immutable caching; files are streamed from disk, never read whole into RAM.
// serveFile is the one implementation, also used for the network boot files under /boot/ (netboot.ts).
import { lstat, realpath } from "node:fs/promises";
import type { Stats } from "node:fs";
import { join, sep } from "node:path";
import { IMAGE_NAME_RE } from "../image/paths";

export const IMAGES_URL_PREFIX = "/images/";
export const IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable";

/**
 * Strong ETag of a stored file. The .sfs is named by its own SHA-256, so its tag is exactly "<digest>"; the manifest
 * is a different (also immutable) representation, so it gets "<digest>.manifest".
 */
export function imageEtag(name: string): string {
  const m = IMAGE_NAME_RE.exec(name);
  if (!m) throw new Error(`not an image file name: ${name}`);
  return m[2] === "sfs" ? `"${m[1]}"` : `"${m[1]}.manifest"`;
}

export type ByteRange = { start: number; end: number }; // inclusive

/**
 * Parses a Range header for a resource of `size` bytes (RFC 9110 §14). Returns:
 * null  -> ignore the header and send the whole file (absent, malformed, other unit, or several ranges);
 * "unsatisfiable" -> 416; otherwise the single range, clamped to the file.
 */
export function parseRange(header: string | null, size: number): ByteRange | "unsatisfiable" | null {
  if (header === null || header.length > 200) return null;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return null; // includes multi-range "bytes=0-1,4-5": we serve single ranges only and may ignore Range
  const [a, b] = [m[1], m[2]];
  if (a === "" && b === "") return null;
  if (a === "") { // suffix range: last N bytes
    const n = Number(b);
    if (!Number.isSafeInteger(n)) return null;
    if (n === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  const end = b === "" ? size - 1 : Number(b);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || (b !== "" && end < start)) return null;
  if (start >= size) return "unsatisfiable";
  return { start, end: Math.min(end, size - 1) };
}

function etagMatches(list: string, etag: string, weak: boolean): boolean {
  if (list.trim() === "*") return true;
  const bare = (t: string) => (weak ? t.replace(/^W\//, "") : t);
  return list.split(",").map((t) => t.trim()).some((t) => bare(t) === etag && (weak || !t.startsWith("W/")));
}

/**
 * Handles GET/HEAD under /images/. Returns null for other paths so the caller can route elsewhere; 404 for any
 * name that is not exactly "<64 hex>.sfs" or "<64 hex>.manifest" (this also rules out traversal, encodings, dirs).
 */
export interface ServeImagesOptions {
  /** Called for requests refused as malformed (bad name, traversal attempt, wrong method), e.g. to write an audit line. */
  onRefused?: (reason: string, path: string, method: string) => void;
}

export async function serveImages(req: Request, imagesDir: string, opts: ServeImagesOptions = {}): Promise<Response | null> {
  const path = new URL(req.url).pathname;
  if (!path.startsWith(IMAGES_URL_PREFIX)) return null;
  const name = path.slice(IMAGES_URL_PREFIX.length);
  if (req.method === "GET" || req.method === "HEAD") {
    if (!IMAGE_NAME_RE.test(name)) {
      opts.onRefused?.("not an image name (<sha256>.sfs or .manifest)", path.slice(0, 200), req.method);
      return new Response("not found\n", { status: 404, headers: NOSNIFF });
    }
  }
  return serveFile(req, { dir: imagesDir, name, path, etag: () => imageEtag(name), cacheControl: IMMUTABLE_CACHE_CONTROL, onRefused: opts.onRefused });
}

const NOSNIFF = { "X-Content-Type-Options": "nosniff" };

export interface ServeFileOptions {
  /** The directory served; `name` must be a plain file name in it (the caller has checked it against its own list). */
  dir: string;
  name: string;
  /** The request path, for refusal messages. */
  path: string;
  /** The strong ETag of the file as found (lstat), e.g. from its content digest or its inode, size and mtime. */
  etag: (st: Stats) => string;
  cacheControl: string;
  contentType?: string;    // default application/octet-stream
  onRefused?: (reason: string, path: string, method: string) => void;
}

/**
 * GET/HEAD of one file in a served directory (images/ and boot/ both): only a regular file, never a symlink, that
 * resolves inside the directory; single byte ranges, If-Range, If-None-Match / If-Modified-Since; streamed from disk.
 */
export async function serveFile(req: Request, o: ServeFileOptions): Promise<Response> {
  const { path } = o;
  const common = NOSNIFF;
  if (req.method !== "GET" && req.method !== "HEAD") {
    o.onRefused?.("method not allowed", path.slice(0, 200), req.method);
    return new Response("method not allowed\n", { status: 405, headers: { ...common, Allow: "GET, HEAD" } });
  }
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(o.name)) {
    o.onRefused?.("not a plain file name", path.slice(0, 200), req.method);
    return new Response("not found\n", { status: 404, headers: common });
  }
  const file = join(o.dir, o.name);
  let size: number, mtime: Date, etag: string;
  try {
    // Only a regular file, never a symlink (a link named like an image could point at a private key), and what is
    // opened must resolve inside the served directory.
    const st = await lstat(file);
    if (!st.isFile()) throw new Error(st.isSymbolicLink() ? "a symlink" : "not a regular file");
    const [real, root] = await Promise.all([realpath(file), realpath(o.dir)]);
    if (!real.startsWith(root + sep)) throw new Error("outside the served directory");
    size = st.size; mtime = st.mtime; etag = o.etag(st);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") o.onRefused?.(`not served: ${(e as Error).message}`, path.slice(0, 200), req.method);
    return new Response("not found\n", { status: 404, headers: common });
  }
  const lastModified = mtime.toUTCString();
  const headers: Record<string, string> = {
    ...common,
    "Content-Type": o.contentType ?? "application/octet-stream",
    "Accept-Ranges": "bytes",
    ETag: etag,
    "Last-Modified": lastModified,
    "Cache-Control": o.cacheControl,
  };

  const inm = req.headers.get("if-none-match");
  if (inm !== null ? etagMatches(inm, etag, true) : notModifiedSince(req.headers.get("if-modified-since"), mtime)) {
    return new Response(null, { status: 304, headers });
  }

  let range = parseRange(req.headers.get("range"), size);
  const ifRange = req.headers.get("if-range");
  if (range !== null && ifRange !== null) {
    // If-Range: the range only applies if the client's validator still matches (strong comparison or exact date).
    const t = ifRange.trim();
    const ok = t.startsWith('"') || t.startsWith("W/") ? etagMatches(t, etag, false) : t === lastModified;
    if (!ok) range = null;
  }
  if (range === "unsatisfiable") {
    return new Response(null, { status: 416, headers: { ...headers, "Content-Range": `bytes */${size}`, "Content-Length": "0" } });
  }
  const head = req.method === "HEAD";
  const blob = Bun.file(file);
  if (range === null) {
    return new Response(head ? null : blob, { status: 200, headers: { ...headers, "Content-Length": String(size) } });
  }
  const length = range.end - range.start + 1;
  return new Response(head ? null : blob.slice(range.start, range.end + 1), {
    status: 206,
    headers: { ...headers, "Content-Range": `bytes ${range.start}-${range.end}/${size}`, "Content-Length": String(length) },
  });
}

function notModifiedSince(header: string | null, mtime: Date): boolean {
  if (header === null) return false;
  const t = Date.parse(header);
  return !Number.isNaN(t) && Math.floor(mtime.getTime() / 1000) * 1000 <= t;
}
