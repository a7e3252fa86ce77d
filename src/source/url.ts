// Parser for image URLs: https://host[:port]/path, https://[v6]:port/path and link-local https://[fe80::1%25eth0]/path.
// Our own because the WHATWG URL parser rejects IPv6 zone identifiers, which link-local image servers need.
import { isIPv4, isIPv6 } from "node:net";

export class UrlError extends Error {
  override name = "UrlError";
}

export interface ImageUrl {
  href: string;        // the URL as given (used in logs and status)
  host: string;        // what to connect to: hostname, IPv4, or IPv6 with "%zone" (no brackets)
  certHost: string;    // what the certificate must name: host without the zone
  zone?: string;       // decoded IPv6 zone (interface name or index)
  isIp: boolean;       // true for IP literals: no SNI is sent and the cert must carry an IP SAN
  port: number;
  path: string;        // request target: path plus query, as given (already percent-encoded)
  name: string;        // decoded last path segment: the image's file name
  origin: string;      // https://host:port without zone, for undici's Pool
}

const MAX_URL = 8192;
const ZONE_RE = /^[A-Za-z0-9_.~-]+$/;
const LABEL_RE = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
// RFC 3986 pchar / query characters (percent escapes checked separately).
const TARGET_RE = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*$/;

function fail(url: string, why: string): never {
  throw new UrlError(`invalid image URL ${JSON.stringify(url.slice(0, 200))}: ${why}`);
}

export function parseImageUrl(input: string): ImageUrl {
  if (typeof input !== "string") throw new UrlError("invalid image URL: not a string");
  const url = input;
  if (url.length > MAX_URL) fail(url, `longer than ${MAX_URL} characters`);
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(url);
  if (!m) fail(url, "expected https://host/path");
  if (m[1].toLowerCase() !== "https") fail(url, `scheme ${m[1]} is not supported; use https`);
  const rest = url.slice(m[0].length);
  const slash = rest.search(/[/?#]/);
  const authority = slash < 0 ? rest : rest.slice(0, slash);
  const target = slash < 0 ? "" : rest.slice(slash);
  if (authority.includes("@")) fail(url, "user:password@ in URLs is not supported");

  let host: string, certHost: string, zone: string | undefined, isIp: boolean, portText: string | undefined;
  if (authority.startsWith("[")) {
    const close = authority.indexOf("]");
    if (close < 0) fail(url, "missing ] after IPv6 address");
    const inside = authority.slice(1, close);
    const after = authority.slice(close + 1);
    if (after !== "" && !after.startsWith(":")) fail(url, "unexpected characters after ]");
    portText = after === "" ? undefined : after.slice(1);
    const pct = inside.indexOf("%");
    const addr = pct < 0 ? inside : inside.slice(0, pct);
    if (!isIPv6(addr)) fail(url, `${JSON.stringify(addr)} is not an IPv6 address`);
    if (pct >= 0) {
      // RFC 6874: the zone is introduced by "%25"; accept a bare "%" too when it cannot be an escape.
      let raw = inside.slice(pct);
      raw = raw.startsWith("%25") ? raw.slice(3) : raw.slice(1);
      let decoded: string;
      try { decoded = decodeURIComponent(raw); } catch { fail(url, "bad percent-escape in IPv6 zone"); }
      if (!ZONE_RE.test(decoded) || decoded.length > 64) fail(url, `bad IPv6 zone ${JSON.stringify(decoded)}`);
      zone = decoded;
    }
    certHost = addr.toLowerCase();
    host = zone ? `${certHost}%${zone}` : certHost;
    isIp = true;
  } else {
    const colon = authority.lastIndexOf(":");
    const h = colon < 0 ? authority : authority.slice(0, colon);
    portText = colon < 0 ? undefined : authority.slice(colon + 1);
    if (h === "") fail(url, "missing host");
    if (h.includes(":")) fail(url, "IPv6 addresses must be in brackets: https://[addr]:port/path");
    if (isIPv4(h)) { isIp = true; host = certHost = h; }
    else if (/^[0-9.]+$/.test(h)) fail(url, `${JSON.stringify(h)} is not a valid IPv4 address`);
    else {
      const lower = h.toLowerCase().replace(/\.$/, "");
      if (lower.length > 253 || !lower.split(".").every((l) => LABEL_RE.test(l))) fail(url, `bad host name ${JSON.stringify(h)}`);
      isIp = false; host = certHost = lower;
    }
  }
  let port = 443;
  if (portText !== undefined) {
    if (!/^[0-9]{1,5}$/.test(portText)) fail(url, `bad port ${JSON.stringify(portText)}`);
    port = Number(portText);
    if (port < 1 || port > 65535) fail(url, `port ${port} out of range`);
  }

  if (target.includes("#")) fail(url, "fragments (#...) are not allowed");
  if (!target.startsWith("/")) fail(url, "missing path to the image file");
  if (!TARGET_RE.test(target)) fail(url, "path contains characters that must be percent-encoded");
  if (/%(?![0-9A-Fa-f]{2})/.test(target)) fail(url, "bad percent-escape in path");
  const q = target.indexOf("?");
  const pathOnly = q < 0 ? target : target.slice(0, q);
  const last = pathOnly.slice(pathOnly.lastIndexOf("/") + 1);
  let name: string;
  try { name = decodeURIComponent(last); } catch { fail(url, "bad percent-escape in file name"); }
  if (name === "" || name === "." || name === ".." || name.includes("/") || name.includes("\0")) {
    fail(url, "the path must end in a file name (e.g. /images/root.sfs)");
  }
  const hostInOrigin = certHost.includes(":") ? `[${certHost}]` : certHost;
  return { href: url, host, certHost, zone, isIp, port, path: target, name, origin: `https://${hostInOrigin}:${port}` };
}
