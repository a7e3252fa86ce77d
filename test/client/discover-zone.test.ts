// Discovery replies naming a link-local API URL without a zone (a server set up with --address fe80::1): the node
// adds the index of the interface the reply came in on. Responder in one network namespace, query in another, over a
// veth pair the test creates (test/helpers/netns.ts).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { makeNetnsPair, type NetnsPair } from "../helpers/netns";
import { openDatabase } from "../../src/server/store/db.ts";
import { addNode } from "../../src/server/store/nodes.ts";

const SRC = join(import.meta.dir, "../../src");
const MAC = "52:54:00:12:34:57";
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
    await startResponder({ db, serverId: "srv-ll", apiUrls: () => ["https://[fe80::1]:8443", "https://${net.addrA}:8443"] });
    console.log("ready");
    setTimeout(() => process.exit(0), 60_000); // bounded even if the test dies
  `);
  writeFileSync(join(dir, "query.ts"), `
    import { discover } from "${SRC}/client/discover.ts";
    const found = await discover({ macs: [process.argv[2]], timeoutMs: 1500, resendMs: 300, families: [process.argv[3]] });
    console.log(JSON.stringify(found));
  `);
  responder = net.spawn(net.a, [process.execPath, join(dir, "responder.ts")]);
  const reader = responder.stdout.getReader();
  const deadline = Date.now() + 15_000;
  let seen = "";
  while (!seen.includes("ready")) {
    const r = await Promise.race([reader.read(), Bun.sleep(Math.max(0, deadline - Date.now())).then(() => null)]);
    if (!r || r.done) throw new Error(`responder did not start: ${seen}`);
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

test("a link-local API URL in a discovery reply gets the receiving interface's index as its zone", async () => {
  const idx = /^(\d+):/.exec(Bun.spawnSync(["ip", "-n", net.b, "-o", "link", "show", net.ifB]).stdout.toString())![1];
  for (const fam of ["IPv6", "IPv4"]) {
    const p = net.spawn(net.b, [process.execPath, join(dir, "query.ts"), MAC, fam]);
    const t = setTimeout(() => p.kill("SIGKILL"), 20_000);
    const [out] = await Promise.all([new Response(p.stdout).text(), p.exited]);
    clearTimeout(t);
    const found = JSON.parse(out.trim().split("\n").pop()!) as { serverId: string; api: string[] }[];
    expect(found.map((f) => f.serverId)).toEqual(["srv-ll"]);
    expect(found[0].api).toEqual([`https://[fe80::1%25${idx}]:8443`, `https://${net.addrA}:8443`]);
  }
}, 60_000);
