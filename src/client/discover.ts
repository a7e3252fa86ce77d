// Node-side discovery: multicast a query on every interface (IPv4 and IPv6 link-local) and collect the servers
// that answer within a bounded time. Replies only say where to look: trust comes later from the site CA over TLS.
import dgram from "node:dgram";
import { randomBytes } from "node:crypto";
import { networkInterfaces } from "node:os";
import { zoneLinkLocalUrl } from "./zone.ts";
import { DISCOVERY_GROUP_V4, DISCOVERY_GROUP_V6, DISCOVERY_PORT, decodeDatagram, encodeDatagram, replySchema, type DiscoveryReply } from "../server/discoverwire.ts";

export interface DiscoverOptions {
  macs: string[];
  uuid?: string;
  port?: number;          // default DISCOVERY_PORT
  timeoutMs?: number;     // total time to listen, default 2000
  resendMs?: number;      // resend the query this often (lost datagrams), default 500
  interfaces?: string[];  // default: every non-loopback interface
  families?: ("IPv4" | "IPv6")[]; // default both
  /** Stop as soon as this many distinct servers answered (default: listen for the whole timeout). */
  enough?: number;
}

export interface FoundServer { serverId: string; api: string[]; time: string; from: string }

export async function discover(o: DiscoverOptions): Promise<FoundServer[]> {
  const port = o.port ?? DISCOVERY_PORT;
  const timeout = Math.min(o.timeoutMs ?? 2000, 60_000);
  const nonce = randomBytes(16).toString("hex");
  const query = encodeDatagram({ airroot: "discover", v: 1, nonce, macs: o.macs, ...(o.uuid ? { uuid: o.uuid } : {}) });
  const ifs = Object.entries(networkInterfaces()).filter(([n, l]) => (o.interfaces ? o.interfaces.includes(n) : !l?.some((a) => a.internal)));
  const found = new Map<string, FoundServer>();
  const socks: dgram.Socket[] = [];
  let finish: () => void = () => {};
  const done = new Promise<void>((ok) => { finish = ok; });
  // A server's link-local API URLs (https://[fe80::1]:443) are reachable through the interface its reply came in on.
  const onMessage = (zone: string) => (msg: Buffer, rinfo: dgram.RemoteInfo) => {
    let r: DiscoveryReply;
    try { r = decodeDatagram(msg, replySchema); } catch { return; }
    if (r.nonce !== nonce || found.has(r.serverId)) return;
    found.set(r.serverId, { serverId: r.serverId, api: r.api.map((u) => zoneLinkLocalUrl(u, zone)), time: r.time, from: rinfo.address });
    if (o.enough && found.size >= o.enough) finish();
  };
  // One socket per interface and family, so each query leaves through that interface.
  for (const [name, list] of ifs) {
    // The interface index (an IPv6 address's scope id) survives a rename by udev; the name is the fallback.
    const zone = String(list?.find((a) => a.family === "IPv6" && a.scopeid)?.scopeid ?? name);
    for (const a of list ?? []) {
      const v6 = a.family === "IPv6";
      if (o.families && !o.families.includes(a.family)) continue;
      if (v6 && !a.address.startsWith("fe80")) continue; // the link-local address is the source for ff02::
      const s = dgram.createSocket({ type: v6 ? "udp6" : "udp4", reuseAddr: true });
      s.on("message", onMessage(zone));
      s.on("error", () => {});
      try {
        await new Promise<void>((ok, fail) => { s.once("error", fail); s.bind(0, v6 ? `${a.address}%${name}` : a.address, () => { s.off("error", fail); ok(); }); });
        s.setMulticastInterface(v6 ? `::%${name}` : a.address);
        socks.push(s);
      } catch { s.close(); }
    }
  }
  if (socks.length === 0) throw new Error("discovery: no network interface with an IPv4 or IPv6 link-local address to send from");
  const send = () => {
    for (const s of socks) {
      const v6 = s.address().family === "IPv6";
      s.send(query, port, v6 ? DISCOVERY_GROUP_V6 : DISCOVERY_GROUP_V4, () => {});
    }
  };
  send();
  const resend = setInterval(send, Math.max(100, o.resendMs ?? 500));
  const timer = setTimeout(finish, timeout);
  await done;
  clearInterval(resend);
  clearTimeout(timer);
  for (const s of socks) s.close();
  return [...found.values()];
}
