// The DHCPv4 client glue: the udhcpc script airroot installs, and the parser of the lease file it writes.

/** Directory where the script records leases ("<iface>.lease") and failures ("<iface>.fail"). */
export const LEASE_DIR = "/run/airroot/net";

/**
 * busybox udhcpc calls this script with $1 = deconfig|bound|renew|leasefail|nak and the lease in the environment.
 * It applies the address and default route, writes resolv.conf, and records the lease for airroot to read back.
 * Values come from the DHCP server (untrusted): they are only quoted here and validated by parseLease().
 */
export function udhcpcScript(leaseDir = LEASE_DIR, resolvConf = "/etc/resolv.conf", busybox = "/usr/bin/busybox"): string {
  // Every tool through busybox explicitly: a dracut-built initramfs has no applet links (and maybe no iproute2).
  return `#!${busybox} sh
# airroot udhcpc script: applies a DHCPv4 lease and records it in ${leaseDir}/$interface.lease
bb='${busybox}'
dir='${leaseDir}'
resolv='${resolvConf}'
"$bb" mkdir -p "$dir"
case "$1" in
  deconfig)
    "$bb" ip -4 addr flush dev "$interface"
    "$bb" ip link set "$interface" up
    ;;
  bound|renew)
    "$bb" ip -4 addr flush dev "$interface"
    "$bb" ip addr add "$ip/\${mask:-24}" dev "$interface" || exit 1
    if [ -n "$router" ]; then
      set -- $router
      "$bb" ip route replace default via "$1" dev "$interface"
    fi
    if [ -n "$dns" ]; then
      : > "$resolv.airroot"
      [ -n "$domain" ] && echo "search $domain" >> "$resolv.airroot"
      for s in $dns; do echo "nameserver $s" >> "$resolv.airroot"; done
      "$bb" mv "$resolv.airroot" "$resolv"
    fi
    {
      echo "interface=$interface"
      echo "ip=$ip"
      echo "mask=$mask"
      echo "router=$router"
      echo "dns=$dns"
      echo "serverid=$serverid"
      echo "lease=$lease"
      echo "domain=$domain"
      echo "hostname=$hostname"
    } > "$dir/$interface.lease.tmp"
    "$bb" mv "$dir/$interface.lease.tmp" "$dir/$interface.lease"
    ;;
  leasefail|nak)
    echo "$1 $message" > "$dir/$interface.fail"
    ;;
esac
exit 0
`;
}

export interface Lease {
  iface: string;
  address: string;
  prefix: number;
  routers: string[];
  dns: string[];
  serverId?: string;
  leaseSec?: number;
  domain?: string;
  hostname?: string;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/;

export class LeaseError extends Error {
  override name = "LeaseError";
}

/**
 * Parses a lease file written by udhcpcScript(). The first occurrence of a key wins (a value with an embedded newline
 * cannot override an earlier key). Address and prefix must be valid; optional fields that are invalid are dropped.
 */
export function parseLease(text: string): Lease {
  if (text.length > 65536) throw new LeaseError("lease file is larger than 64 KiB");
  const kv = new Map<string, string>();
  for (const line of text.split("\n")) {
    const eq = line.indexOf("=");
    if (eq <= 0) continue;
    const k = line.slice(0, eq);
    if (!kv.has(k)) kv.set(k, line.slice(eq + 1));
  }
  const iface = kv.get("interface") ?? "";
  if (!/^[A-Za-z0-9_.@-]{1,15}$/.test(iface)) throw new LeaseError(`lease names an invalid interface "${iface.slice(0, 40)}"`);
  const address = kv.get("ip") ?? "";
  if (!IPV4.test(address)) throw new LeaseError(`lease for ${iface} has an invalid address "${address.slice(0, 40)}"`);
  const maskText = kv.get("mask") ?? "";
  const prefix = Number(maskText);
  if (!/^\d{1,2}$/.test(maskText) || prefix < 1 || prefix > 32) throw new LeaseError(`lease for ${iface} has an invalid prefix length "${maskText.slice(0, 40)}"`);
  const list = (k: string) => (kv.get(k) ?? "").split(/\s+/).filter((s) => IPV4.test(s)).slice(0, 8);
  const leaseSec = Number(kv.get("lease"));
  const serverId = kv.get("serverid");
  const domain = kv.get("domain");
  const hostname = kv.get("hostname");
  return {
    iface, address, prefix, routers: list("router"), dns: list("dns"),
    ...(serverId && IPV4.test(serverId) ? { serverId } : {}),
    ...(Number.isInteger(leaseSec) && leaseSec > 0 ? { leaseSec } : {}),
    ...(domain && HOSTNAME.test(domain) && domain.length <= 253 ? { domain } : {}),
    ...(hostname && HOSTNAME.test(hostname) && hostname.length <= 253 ? { hostname } : {}),
  };
}
