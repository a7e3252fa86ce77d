// IP addresses and subnets: parsing, containment, this host's addresses, and the "trusted network" rule for enrollment.
import { isIP } from "node:net";
import { networkInterfaces } from "node:os";

export interface Ip { v: 4 | 6; bytes: Uint8Array }
export interface Cidr { ip: Ip; bits: number; text: string }

function parseV4(s: string): Uint8Array {
  return new Uint8Array(s.split(".").map(Number));
}

function parseV6(s: string): Uint8Array {
  const out = new Uint8Array(16);
  let text = s;
  let tail: number[] = [];
  const lastColon = text.lastIndexOf(":");
  if (text.includes(".")) { // embedded IPv4 in the last 32 bits
    tail = Array.from(parseV4(text.slice(lastColon + 1)));
    text = text.slice(0, lastColon + 1) + "0:0";
  }
  const [head, rest] = text.split("::");
  const h = head ? head.split(":") : [];
  const r = rest !== undefined && rest !== "" ? rest.split(":") : [];
  const groups = rest === undefined ? h : [...h, ...Array(8 - h.length - r.length).fill("0"), ...r];
  groups.forEach((g, i) => { const n = parseInt(g, 16); out[2 * i] = n >> 8; out[2 * i + 1] = n & 255; });
  if (tail.length) out.set(tail, 12);
  return out;
}

/** Parses an IPv4 or IPv6 address (zone index dropped); IPv4-mapped IPv6 becomes IPv4. Null when invalid. */
export function parseIp(s: string): Ip | null {
  const bare = s.replace(/%.*$/, "");
  const kind = isIP(bare);
  if (kind === 4) return { v: 4, bytes: parseV4(bare) };
  if (kind !== 6) return null;
  const b = parseV6(bare);
  if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) return { v: 4, bytes: b.slice(12) };
  return { v: 6, bytes: b };
}

/** Parses "ADDR/BITS" (or a bare address as a host route). Throws naming the text when invalid. */
export function parseCidr(s: string): Cidr {
  const [a, b, extra] = s.trim().split("/");
  const ip = parseIp(a ?? "");
  const max = ip?.v === 4 ? 32 : 128;
  const bits = b === undefined ? max : /^\d{1,3}$/.test(b) ? Number(b) : NaN;
  if (!ip || extra !== undefined || !(bits >= 0 && bits <= max)) throw new Error(`invalid subnet "${s}": use ADDRESS/PREFIX like 10.1.0.0/16 or fd00::/64`);
  return { ip, bits, text: s.trim() };
}

export function inCidr(ip: Ip, c: Cidr): boolean {
  if (ip.v !== c.ip.v) return false;
  let bits = c.bits;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((ip.bytes[i] & mask) !== (c.ip.bytes[i] & mask)) return false;
  }
  return true;
}

const LINK_LOCAL = [parseCidr("169.254.0.0/16"), parseCidr("fe80::/10")];
const LOOPBACK = [parseCidr("127.0.0.0/8"), parseCidr("::1/128")];

export interface HostAddress { iface: string; address: string; cidr: string; internal: boolean }

/** This host's addresses (IPv6 link-local without zone), from the kernel's interface list. */
export function hostAddresses(): HostAddress[] {
  const out: HostAddress[] = [];
  for (const [iface, list] of Object.entries(networkInterfaces())) {
    for (const a of list ?? []) {
      const address = a.address.replace(/%.*$/, "");
      out.push({ iface, address, cidr: a.cidr ?? `${address}/${a.family === "IPv4" ? 32 : 128}`, internal: a.internal });
    }
  }
  return out;
}

export interface TrustOptions {
  linkLocal?: boolean;          // default true: link-local sources are on a segment this server is attached to
  attached?: boolean;           // default true: subnets of this host's own interfaces (includes loopback)
  subnets?: string[];           // extra configured subnets (e.g. routed management networks)
  interfaces?: HostAddress[];   // default hostAddresses(); injectable for tests
}

/** Decides whether a request's source address is on a network trusted for enrollment; `why` names the rule. */
export function trustedSource(addr: string, o: TrustOptions = {}): { trusted: boolean; why: string } {
  const ip = parseIp(addr);
  if (!ip) return { trusted: false, why: `source address "${addr}" is not an IP address` };
  if ((o.linkLocal ?? true) && LINK_LOCAL.some((c) => inCidr(ip, c))) return { trusted: true, why: "link-local" };
  if (o.attached ?? true) {
    if (LOOPBACK.some((c) => inCidr(ip, c))) return { trusted: true, why: "loopback" };
    for (const h of o.interfaces ?? hostAddresses()) {
      let c: Cidr;
      try { c = parseCidr(h.cidr); } catch { continue; }
      if (inCidr(ip, c)) return { trusted: true, why: `attached subnet ${h.cidr} (${h.iface})` };
    }
  }
  for (const s of o.subnets ?? []) if (inCidr(ip, parseCidr(s))) return { trusted: true, why: `configured subnet ${s}` };
  return { trusted: false, why: `source ${addr} is not link-local, not on an attached subnet and not in a configured trusted subnet` };
}
