// The URLs nodes are given for this server (image URLs, API URLs in the node config, discovery answers, the
// initramfs `servers` file). They come from the configuration only, never from a listen address: behind NAT or a
// port forward the address airroot serve listens on (127.0.0.1:8443, say) is not one a node can reach.
import { inCidr, parseCidr, parseIp } from "./netaddr.ts";

/** Host part of a URL for an address: IPv6 in brackets (without a zone, which only means something on this host). */
export const urlHost = (h: string) => (h.includes(":") ? `[${h.replace(/%.*$/, "")}]` : h);

export const httpsBase = (host: string, port: number) => `https://${urlHost(host)}${port === 443 ? "" : `:${port}`}`;

export interface AdvertiseConfig { advertise: string[]; addresses: string[]; port: number }

/** This server's node-facing base URLs: `advertise` when set, else every configured address at the configured port. */
export function advertisedUrls(c: AdvertiseConfig): string[] {
  return [...new Set(c.advertise.length ? c.advertise : c.addresses.map((a) => httpsBase(a, c.port)))];
}

/** The API servers nodes are told about: this server's advertised URLs first, then its peers. */
export function siteApiUrls(own: string[], peers: string[]): string[] {
  return [...new Set([...own, ...peers])];
}

/** The host of a base URL, IPv6 without brackets. */
export function urlHostname(u: string): string {
  return new URL(u).hostname.replace(/^\[(.*)\]$/, "$1");
}

const LOOPBACK = [parseCidr("127.0.0.0/8"), parseCidr("::1/128")];
const LINK_LOCAL = [parseCidr("fe80::/10"), parseCidr("169.254.0.0/16")];

export function isLoopbackHost(h: string): boolean {
  if (/^localhost\.?$/i.test(h) || /\.localhost\.?$/i.test(h)) return true;
  const ip = parseIp(h);
  return !!ip && LOOPBACK.some((c) => inCidr(ip, c));
}

export function isLinkLocalHost(h: string): boolean {
  const ip = parseIp(h);
  return !!ip && LINK_LOCAL.some((c) => inCidr(ip, c));
}

/** What is wrong with a set of advertised URLs, as warnings for the log and for `serve init` / `serve config`. */
export function advertiseWarnings(urls: string[]): string[] {
  const w: string[] = [];
  if (urls.length === 0) {
    w.push("no advertised URL: nodes are given no image or API URL for this server (only mirrors and peers); " +
      "add an address nodes reach with `airroot serve config add addresses ADDR` or `airroot serve config add advertise https://HOST[:PORT]`");
  }
  for (const u of urls) {
    if (isLoopbackHost(urlHostname(u))) {
      w.push(`advertised URL ${u} is a loopback address: nodes would connect to themselves, not to this server; ` +
        "advertise an address nodes reach (`airroot serve config set advertise https://HOST[:PORT]`)");
    }
  }
  return w;
}

/** Notes (not problems) about advertised URLs. */
export function advertiseNotes(urls: string[]): string[] {
  const ll = urls.filter((u) => isLinkLocalHost(urlHostname(u)));
  return ll.length ? [`link-local ${ll.join(" ")}: a node resolves a link-local address on its boot interface (the URL carries no zone)`] : [];
}

/**
 * Validates an https:// base URL typed by an operator and returns it normalised (lower-case host, IPv6 compressed,
 * default port and trailing slash dropped). Throws a message naming the value.
 */
export function parseBaseUrl(s: string, what = "URL"): string {
  let u: URL;
  try { u = new URL(s.trim()); } catch { throw new Error(`${what} "${s}" is not a URL: use https://HOST[:PORT][/PATH]`); }
  if (u.protocol !== "https:") throw new Error(`${what} "${s}" must start with https://`);
  if (u.username || u.password || u.search || u.hash) throw new Error(`${what} "${s}" must not carry a user, query or fragment`);
  if (!u.hostname) throw new Error(`${what} "${s}" has no host`);
  const path = u.pathname.replace(/\/+$/, "");
  const out = `https://${u.host}${path}`;
  if (!/^https:\/\/[A-Za-z0-9.\-\[\]:]+(\/[A-Za-z0-9._~\-\/]*)?$/.test(out) || out.length > 256) {
    throw new Error(`${what} "${s}" has characters airroot does not accept in a base URL (host, port and a plain path only)`);
  }
  return out;
}

/** An IP address as nodes are given it: no zone, IPv6 in canonical (lower-case, compressed) form. */
export function canonicalAddress(a: string): string {
  const bare = a.trim().replace(/%.*$/, "");
  return bare.includes(":") ? new URL(`https://[${bare}]/`).hostname.slice(1, -1) : bare;
}

/** URLs of actual listeners, for clients on this machine: a wildcard stands for loopback. */
export function listenerUrls(addresses: { host: string; port: number }[]): string[] {
  return [...new Set(addresses.map((l) => {
    const host = l.host === "0.0.0.0" ? "127.0.0.1" : l.host === "::" ? "::1" : l.host;
    return `https://${urlHost(host)}:${l.port}`;
  }))];
}
