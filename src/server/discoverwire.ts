// The discovery wire format shared by the multicast responder and the node-side query: small, strict JSON datagrams.
import { arr, mac, obj, oneOf, opt, str, uuid, int, parseJson, SchemaError, type Infer } from "./schema.ts";

export const DISCOVERY_PORT = 7413;
export const DISCOVERY_GROUP_V4 = "239.255.74.13";   // organisation-local scope (RFC 2365)
export const DISCOVERY_GROUP_V6 = "ff02::7413";      // link-local scope: never routed off the segment
export const MAX_DATAGRAM = 2048;

export const querySchema = obj({
  airroot: oneOf(["discover"] as const),
  v: int({ min: 1, max: 1 }),
  nonce: str({ min: 16, max: 64, pattern: /^[0-9a-f]+$/, what: "hex" }),
  macs: arr(mac, { max: 32 }),
  uuid: opt(uuid),
});
export type DiscoveryQuery = Infer<typeof querySchema>;

export const replySchema = obj({
  airroot: oneOf(["here"] as const),
  v: int({ min: 1, max: 1 }),
  nonce: str({ min: 16, max: 64, pattern: /^[0-9a-f]+$/, what: "hex" }),
  serverId: str({ max: 64, pattern: /^[A-Za-z0-9-]+$/ }),
  api: arr(str({ max: 256, pattern: /^https:\/\/[A-Za-z0-9.\-\[\]:%]+(\/[A-Za-z0-9._~\-\/]*)?$/, what: "an https URL" }), { min: 1, max: 16 }),
  time: str({ max: 40 }),
});
export type DiscoveryReply = Infer<typeof replySchema>;

/** Decodes an untrusted datagram; every failure is a SchemaError. */
export function decodeDatagram<T>(msg: Uint8Array, v: (x: unknown, p: string) => T): T {
  if (msg.length > MAX_DATAGRAM) throw new SchemaError("", `datagram larger than ${MAX_DATAGRAM} bytes`);
  let text: string;
  try { text = new TextDecoder("utf-8", { fatal: true }).decode(msg); } catch { throw new SchemaError("", "datagram is not UTF-8"); }
  return parseJson(text, v, MAX_DATAGRAM);
}

export function encodeDatagram(x: DiscoveryQuery | DiscoveryReply): Uint8Array {
  const b = new TextEncoder().encode(JSON.stringify(x));
  if (b.length > MAX_DATAGRAM) throw new Error("discovery datagram would exceed the size limit");
  return b;
}
