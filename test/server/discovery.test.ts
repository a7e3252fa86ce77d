// Discovery across a real link: responder in one network namespace, query (a small bun script) in another, over a
// veth pair the test creates; IPv4 multicast and IPv6 link-local multicast; unknown nodes get no answer.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { removeScratchDirs } from "../helpers/tmp";
import { startDiscoveryPair, type DiscoveryPair } from "../helpers/discovery-pair";
import { decodeDatagram, encodeDatagram, querySchema, replySchema } from "../../src/server/discoverwire.ts";
import { SchemaError } from "../../src/server/schema.ts";

const MAC = "52:54:00:12:34:56";
let pair: DiscoveryPair;
const query = (mac: string, family: "IPv4" | "IPv6") => pair.query(mac, family);

beforeAll(async () => {
  pair = await startDiscoveryPair({ mac: MAC, serverId: "srv-a", apiUrls: (a) => [`https://${a}:8443`] });
}, 60_000);

afterAll(async () => {
  await pair?.stop();
  removeScratchDirs();
}, 60_000);

test("a known node finds the server over IPv4 multicast inside the test's namespaces", async () => {
  const found = await query(MAC, "IPv4");
  expect(found).toHaveLength(1);
  expect(found[0].serverId).toBe("srv-a");
  expect(found[0].api).toEqual([`https://${pair.net.addrA}:8443`]);
  expect(found[0].from).toBe(pair.net.addrA);
}, 60_000);

test("a known node finds the server over IPv6 link-local multicast (ff02::)", async () => {
  const found = await query(MAC, "IPv6");
  expect(found).toHaveLength(1);
  expect(found[0].serverId).toBe("srv-a");
  expect(found[0].from).toStartWith("fe80:");
}, 60_000);

test("an unknown node gets no answer", async () => {
  expect(await query("52:54:00:99:99:99", "IPv4")).toEqual([]);
}, 60_000);

test("fuzz: discovery datagrams that are not exact, bounded JSON are rejected with SchemaError only", () => {
  const good = encodeDatagram({ airroot: "discover", v: 1, nonce: "ab".repeat(16), macs: [MAC] });
  expect(decodeDatagram(good, querySchema).macs).toEqual([MAC]);
  const reply = encodeDatagram({ airroot: "here", v: 1, nonce: "ab".repeat(16), serverId: "s", api: ["https://10.0.0.1"], time: "t" });
  for (let i = 0; i < 500; i++) {
    const base = i % 2 ? good : reply;
    let b: Uint8Array;
    if (i % 5 === 0) b = crypto.getRandomValues(new Uint8Array(i % 3000));
    else if (i % 5 === 1) b = base.slice(0, Math.floor(Math.random() * base.length));
    else { b = base.slice(); b[Math.floor(Math.random() * b.length)] = Math.floor(Math.random() * 256); }
    for (const schema of [querySchema, replySchema] as const) {
      try { decodeDatagram(b, schema as typeof querySchema); } catch (e) { expect(e).toBeInstanceOf(SchemaError); }
    }
  }
  expect(() => decodeDatagram(new TextEncoder().encode(JSON.stringify({ airroot: "discover", v: 1, nonce: "ab".repeat(16), macs: [], extra: 1 })), querySchema)).toThrow("unknown field");
}, 60_000);
