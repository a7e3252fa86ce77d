// IPv6 zones in server URLs. A link-local server address (fe80::/10) means nothing without the interface to reach it
// through; RFC 6874 writes that as https://[fe80::1%25eth0]/... . WHATWG URL (and so fetch and undici) refuses zones,
// so they are split off before parsing and handed to the connection instead (src/client/http.ts httpsAgent).
import { isIPv6 } from "node:net";
import type { NodeConfig } from "../server/selfapi.ts";

/**
 * An https URL with an IPv6 zone split into what URL parsers accept (the URL without the zone) and the zone with its
 * address. A URL without a zone comes back unchanged. The zone is local to this host: it is never sent (Host, SNI).
 */
export function splitZone(url: string): { url: string; zone?: string; address?: string } {
  const m = /^(https:\/\/)\[([0-9A-Fa-f:.]+)%(?:25)?([^\]]*)\](.*)$/s.exec(url);
  if (!m) return { url };
  let zone: string;
  try { zone = decodeURIComponent(m[3]); } catch { throw new Error(`"${url.slice(0, 200)}": bad percent-escape in the IPv6 zone`); }
  if (!isIPv6(m[2]) || !/^[A-Za-z0-9_.~-]{1,64}$/.test(zone)) throw new Error(`"${url.slice(0, 200)}": bad IPv6 address or zone`);
  return { url: `${m[1]}[${m[2]}]${m[4]}`, zone, address: m[2].toLowerCase() };
}

/** Parses an https URL that may carry an IPv6 zone (new URL() alone refuses those). */
export function parseHttpsUrl(url: string): URL {
  return new URL(splitZone(url).url);
}

/** True for an IPv6 address in fe80::/10. */
export function isLinkLocalV6(addr: string): boolean {
  if (!isIPv6(addr)) return false;
  const first = addr.startsWith("::") ? 0 : parseInt(addr.split(":")[0] || "0", 16);
  return (first & 0xffc0) === 0xfe80;
}

/**
 * The URL with `%25zone` added when its host is an IPv6 link-local address without a zone; any other URL (a host
 * name, IPv4, a global IPv6 address, a link-local one that already names its zone) comes back unchanged, as does
 * every URL when there is no zone to add.
 */
export function zoneLinkLocalUrl(url: string, zone: string | undefined): string {
  if (!zone) return url;
  const m = /^(https:\/\/)\[([^\]%]+)\](.*)$/is.exec(url);
  if (!m || !isLinkLocalV6(m[2])) return url;
  return `${m[1]}[${m[2]}%25${encodeURIComponent(zone)}]${m[3]}`;
}

/** The node config with every URL in it (API servers, image and manifest URLs) passed through `map`. */
export function mapConfigUrls(c: NodeConfig, map: (url: string) => string): NodeConfig {
  return {
    ...c,
    servers: c.servers.map(map),
    image: c.image ? { ...c.image, urls: c.image.urls.map(map), manifestUrls: c.image.manifestUrls.map(map) } : c.image,
  };
}
