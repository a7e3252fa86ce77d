// Validation of node records typed by an admin (`airroot node add`): names, MACs, UUID, profile, network settings.
import { NODE_NAME_RE, UUID_RE, normaliseMac } from "./schema.ts";
import { parseCidr, parseIp } from "./netaddr.ts";
import type { NodeNetwork } from "./store/nodes.ts";

export interface NodeSpecInput {
  name: string;
  macs: string[];
  uuid?: string;
  profile: string;
  ip?: string;
  gateway?: string;
  dns?: string[];
  dhcp?: boolean;
}

export interface NodeSpec { name: string; macs: string[]; uuid: string | null; profile: string; net: NodeNetwork }

export const PROFILE_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function parseNodeSpec(i: NodeSpecInput): NodeSpec {
  const name = i.name.trim().toLowerCase();
  if (!NODE_NAME_RE.test(name)) throw new Error(`node name "${i.name}" is not a valid host name (a-z, 0-9, '-', at most 63 characters)`);
  if (i.macs.length === 0 && !i.uuid) throw new Error(`node ${name}: give at least one --mac (or a --uuid) so the node can be recognised`);
  const macs = [...new Set(i.macs.map(normaliseMac))];
  const uuid = i.uuid ? i.uuid.trim().toLowerCase() : null;
  if (uuid !== null && !UUID_RE.test(uuid)) throw new Error(`node ${name}: --uuid "${i.uuid}" is not a UUID like 4c4c4544-0035-3010-8052-b4c04f564433`);
  if (!PROFILE_RE.test(i.profile)) throw new Error(`node ${name}: --profile "${i.profile}" may only contain letters, digits, . _ -`);
  let net: NodeNetwork;
  if (i.dhcp && (i.ip || i.gateway || i.dns?.length)) throw new Error(`node ${name}: --dhcp cannot be combined with --ip, --gateway or --dns`);
  if (i.ip) {
    parseCidr(i.ip);
    if (!i.ip.includes("/")) throw new Error(`node ${name}: --ip needs a prefix length, e.g. 10.1.2.3/24`);
    if (i.gateway && !parseIp(i.gateway)) throw new Error(`node ${name}: --gateway "${i.gateway}" is not an IP address`);
    for (const d of i.dns ?? []) if (!parseIp(d)) throw new Error(`node ${name}: --dns "${d}" is not an IP address`);
    net = { mode: "static", ip: i.ip.trim(), ...(i.gateway ? { gateway: i.gateway.trim() } : {}), dns: (i.dns ?? []).map((d) => d.trim()) };
  } else {
    if (i.gateway || i.dns?.length) throw new Error(`node ${name}: --gateway and --dns need --ip (or use --dhcp)`);
    net = { mode: "dhcp" };
  }
  return { name, macs, uuid, profile: i.profile, net };
}
