// Discovery across a real link: responder in one network namespace, query (a small bun script) in another, over a
// veth pair the test creates; IPv4 multicast and IPv6 link-local multicast; unknown nodes get no answer.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { makeNetnsPair, type NetnsPair } from "../helpers/netns";
import { openDatabase } from "../../src/server/store/db.ts";
import { addNode } from "../../src/server/store/nodes.ts";
import { decodeDatagram, encodeDatagram, querySchema, replySchema } from "../../src/server/discoverwire.ts";
import { SchemaError } from "../../src/server/schema.ts";

const SRC = join(import.meta.dir, "../../src");
const MAC = "52:54:00:12:34:56";
let net: NetnsPair, dir: string, responder: ReturnType<NetnsPair["spawn"]> | undefined;

beforeAll(async () => {
  dir = scratchDir();
  const db = openDatabase(dir);
  addNode(db, { name: "n1", macs: [MAC], profile: "p", net: { mode: "dhcp" } });
  db.close();
  net = await makeNetnsPair();
  writeFileSync(join(dir, "responder.ts"), `
    import { openDatabase } from "${SRC}/server/store/db.ts";
    import "${SRC}/server/store/nodes.ts";
    import { startResponder } from "${SRC}/server/discovery.ts";
    const db = openDatabase(${JSON.stringify(dir)});
    await startResponder({ db, serverId: "srv-a", apiUrls: () => ["https://${net.addrA}:8443"] });
    console.log("ready");
    setTimeout(() => process.exit(0), 60_000); // bounded even if the test dies
  `);
  writeFileSync(join(dir, "query.ts"), `
    import { discover } from "${SRC}/client/discover.ts";
    const [mac, fam] = process.argv.slice(2);
    const found = await discover({ macs: [mac], timeoutMs: 1500, resendMs: 300, families: [fam] });
    console.log(JSON.stringify(found));
  `);
  responder = net.spawn(net.a, [process.execPath, join(dir, "responder.ts")]);
  const reader = responder.stdout.getReader();
  const deadline = Date.now() + 15_000;
  let seen = "";
  while (!seen.includes("ready")) {
    const r = await Promise.race([reader.read(), Bun.sleep(Math.max(0, deadline - Date.now())).then(() => null)]);
    if (!r || r.done) throw new Error(`responder did not start: ${seen} ${await new Response(responder.stderr).text()}`);
    seen += new TextDecoder().decode(r.value);
  }
  reader.releaseLock();
}, 60_000);

afterAll(async () => {
  responder?.kill("SIGKILL");
  await responder?.exited;
  net?.remove();
  removeScratchDirs();
}, 60_000);

async function query(mac: string, family: "IPv4" | "IPv6"): Promise<{ serverId: string; api: string[]; from: string }[]> {
  const p = net.spawn(net.b, [process.execPath, join(dir, "query.ts"), mac, family]);
  const t = setTimeout(() => p.kill("SIGKILL"), 20_000);
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(t);
  if (!out.trim()) throw new Error(`query failed: ${err}`);
  return JSON.parse(out);
}

test("a known node finds the server over IPv4 multicast inside the test's namespaces", async () => {
  const found = await query(MAC, "IPv4");
  expect(found).toHaveLength(1);
  expect(found[0].serverId).toBe("srv-a");
  expect(found[0].api).toEqual([`https://${net.addrA}:8443`]);
  expect(found[0].from).toBe(net.addrA);
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
