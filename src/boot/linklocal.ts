// IPv6 link-local server URLs on the node: https://[fe80::1]/... is a dead source without the interface to reach it
// through (a server started with `--address fe80::1` hands out exactly that). The node adds the zone of the interface
// it booted on to every such URL it is given (kernel command line, site servers list, server config), in the RFC 6874
// form that src/source/url.ts and src/client/http.ts take: https://[fe80::1%25IFINDEX]/...
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { zoneLinkLocalUrl } from "../client/zone";
import type { NetResult } from "./net";

/**
 * The zone of the interface the node booted on: the first interface the network step configured with an address
 * (DHCP or static), else the first one it brought up (link-local only). Its interface index, not its name: udev in
 * the booted system may rename eth0 to eno1 while the mount engine keeps reading the root through it; the index stays.
 */
export function bootZone(net: NetResult | undefined, sysDir = "/sys"): string | undefined {
  const c = net?.configured.find((x) => x.method !== "link-local") ?? net?.configured[0];
  if (!c) return undefined;
  try {
    const idx = readFileSync(join(sysDir, "class/net", c.iface, "ifindex"), "utf8").trim();
    if (/^\d+$/.test(idx)) return idx;
  } catch {}
  return c.iface;
}

/** Maps one URL: the boot interface's zone added to a zone-less link-local host (undefined zone: unchanged). */
export function zoner(zone: string | undefined): (url: string) => string {
  return (url) => zoneLinkLocalUrl(url, zone);
}
