// The discovery responder: answers multicast queries (IPv4 239.255.74.13, IPv6 ff02::7413) from nodes this server
// knows (by MAC or UUID) with the API URLs of every server of the site. Unknown nodes get no answer.
import dgram from "node:dgram";
import type { Db } from "./store/sql.ts";
import { networkInterfaces } from "node:os";
import { DISCOVERY_GROUP_V4, DISCOVERY_GROUP_V6, DISCOVERY_PORT, decodeDatagram, encodeDatagram, querySchema } from "./discoverwire.ts";
import { nodesByIdentity } from "./store/nodes.ts";
import type { Logger } from "../util/log.ts";

export interface ResponderOptions {
  db: Db;
  serverId: string;
  apiUrls: () => string[];
  port?: number;              // default DISCOVERY_PORT
  maxRepliesPerSecond?: number; // default 200: a flood of queries cannot turn us into an amplifier
  log?: Logger;
}

export interface Responder { close(): Promise<void>; answered: () => number }

/** Joins the groups on every interface with an address of that family (a netns may have no default route). */
function join(sock: dgram.Socket, family: "IPv4" | "IPv6", log?: Logger): number {
  let joined = 0;
  for (const [name, list] of Object.entries(networkInterfaces())) {
    const a = list?.find((x) => x.family === family);
    if (!a) continue;
    try {
      if (family === "IPv4") sock.addMembership(DISCOVERY_GROUP_V4, a.address);
      else sock.addMembership(DISCOVERY_GROUP_V6, `::%${name}`);
      joined++;
    } catch (e) { log?.debug(`discovery: cannot join ${family} group on ${name}: ${(e as Error).message}`); }
  }
  return joined;
}

export async function startResponder(o: ResponderOptions): Promise<Responder> {
  const port = o.port ?? DISCOVERY_PORT;
  const limit = o.maxRepliesPerSecond ?? 200;
  let windowStart = 0, inWindow = 0, answered = 0;
  const sockets: dgram.Socket[] = [];
  const onMessage = (sock: dgram.Socket) => async (msg: Buffer, rinfo: dgram.RemoteInfo) => {
    let q;
    try { q = decodeDatagram(msg, querySchema); } catch { return; } // not ours or malformed: silence
    let names: string[];
    try { names = await nodesByIdentity(o.db, q.macs, q.uuid); } catch (e) {
      o.log?.warn(`discovery: looking up a query in the database ${o.db.where}: ${(e as Error).message}`);
      return;
    }
    if (names.length === 0) return;
    const now = Date.now();
    if (now - windowStart >= 1000) { windowStart = now; inWindow = 0; }
    if (++inWindow > limit) return;
    const reply = encodeDatagram({ airroot: "here", v: 1, nonce: q.nonce, serverId: o.serverId, api: o.apiUrls().slice(0, 16), time: new Date(now).toISOString() });
    sock.send(reply, rinfo.port, rinfo.address, (err) => {
      if (err) o.log?.debug(`discovery: reply to ${rinfo.address} failed: ${err.message}`);
    });
    answered++;
    o.log?.info(`discovery: answered ${names.join(",")} at ${rinfo.address}`);
  };
  for (const [type, family] of [["udp4", "IPv4"], ["udp6", "IPv6"]] as const) {
    const sock = dgram.createSocket({ type, reuseAddr: true, ipv6Only: type === "udp6" });
    sock.on("message", onMessage(sock));
    sock.on("error", (e) => o.log?.warn(`discovery ${type}: ${e.message}`));
    try {
      await new Promise<void>((ok, fail) => { sock.once("error", fail); sock.bind(port, type === "udp4" ? "0.0.0.0" : "::", () => { sock.off("error", fail); ok(); }); });
    } catch (e) {
      o.log?.warn(`discovery: cannot bind ${type} port ${port}: ${(e as Error).message}`);
      sock.close();
      continue;
    }
    if (join(sock, family, o.log) === 0) o.log?.warn(`discovery: joined no ${family} multicast group (no interface with an ${family} address)`);
    sockets.push(sock);
  }
  if (sockets.length === 0) throw new Error(`discovery: could not bind UDP port ${port} for IPv4 or IPv6`);
  return {
    answered: () => answered,
    async close() { await Promise.all(sockets.map((s) => new Promise<void>((ok) => s.close(() => ok())))); },
  };
}
