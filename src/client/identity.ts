// The node's hardware identity as the server knows it: MAC addresses of physical NICs and the SMBIOS system UUID.
import { readdirSync, readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { MAC_RE, UUID_RE } from "../server/schema.ts";

/** MACs of interfaces backed by a device (not lo, bridges, veth, tun), lower case. */
export function localMacs(sysNet = "/sys/class/net"): string[] {
  const out = new Set<string>();
  let names: string[] = [];
  try { names = readdirSync(sysNet); } catch { return []; }
  for (const n of names) {
    if (!existsSync(join(sysNet, n, "device"))) continue;
    try {
      const m = readFileSync(join(sysNet, n, "address"), "utf8").trim().toLowerCase();
      if (MAC_RE.test(m) && m !== "00:00:00:00:00:00") out.add(m);
    } catch { /* interface vanished */ }
  }
  return [...out].sort();
}

/** SMBIOS product UUID, lower case, or undefined when absent or a known placeholder. */
export function smbiosUuid(file = "/sys/class/dmi/id/product_uuid"): string | undefined {
  try {
    const u = readFileSync(file, "utf8").trim().toLowerCase();
    if (!UUID_RE.test(u) || /^(0{8}-0{4}-0{4}-0{4}-0{12}|f{8}-f{4}-f{4}-f{4}-f{12})$/.test(u)) return undefined;
    return u;
  } catch { return undefined; }
}
