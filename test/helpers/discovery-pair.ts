// A discovery responder in one network namespace and node-side queries from another, over a veth pair the test
// creates (test/helpers/netns.ts): the setup the discovery tests share. The responder serves one node (MAC) from a
// scratch database and answers with apiUrls(addressOfA); it exits on its own after 60 s even if the test dies.
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { scratchDir } from "./tmp";
import { makeNetnsPair, type NetnsPair } from "./netns";
import { openDatabase } from "../../src/server/store/db.ts";
import { addNode } from "../../src/server/store/nodes.ts";

const SRC = join(import.meta.dir, "../../src");

export interface Found { serverId: string; api: string[]; from: string }
export interface DiscoveryPair {
  net: NetnsPair;
  /** Runs discover() for MAC in namespace B over one address family; what it found. */
  query(mac: string, family: "IPv4" | "IPv6"): Promise<Found[]>;
  stop(): Promise<void>;
}

export async function startDiscoveryPair(o: { mac: string; serverId: string; apiUrls: (addrA: string) => string[] }): Promise<DiscoveryPair> {
  const dir = scratchDir();
  const db = await openDatabase(dir);
  await addNode(db, { name: "n1", macs: [o.mac], profile: "p", net: { mode: "dhcp" } });
  await db.close();
  const net = await makeNetnsPair();
  writeFileSync(join(dir, "responder.ts"), `
    import { openDatabase } from "${SRC}/server/store/db.ts";
    import "${SRC}/server/store/nodes.ts";
    import { startResponder } from "${SRC}/server/discovery.ts";
    const db = await openDatabase(${JSON.stringify(dir)});
    await startResponder({ db, serverId: ${JSON.stringify(o.serverId)}, apiUrls: () => ${JSON.stringify(o.apiUrls(net.addrA))} });
    console.log("ready");
    setTimeout(() => process.exit(0), 60_000); // bounded even if the test dies
  `);
  writeFileSync(join(dir, "query.ts"), `
    import { discover } from "${SRC}/client/discover.ts";
    const [mac, fam] = process.argv.slice(2);
    const found = await discover({ macs: [mac], timeoutMs: 1500, resendMs: 300, families: [fam] });
    console.log(JSON.stringify(found));
  `);
  const responder = net.spawn(net.a, [process.execPath, join(dir, "responder.ts")]);
  const stop = async () => { responder.kill("SIGKILL"); await responder.exited; net.remove(); };
  try {
    const reader = responder.stdout.getReader();
    const deadline = Date.now() + 15_000;
    let seen = "";
    while (!seen.includes("ready")) {
      const r = await Promise.race([reader.read(), Bun.sleep(Math.max(0, deadline - Date.now())).then(() => null)]);
      if (!r || r.done) throw new Error(`responder did not start: ${seen} ${await new Response(responder.stderr).text()}`);
      seen += new TextDecoder().decode(r.value);
    }
    reader.releaseLock();
  } catch (e) { await stop(); throw e; }
  return {
    net,
    async query(mac, family) {
      const p = net.spawn(net.b, [process.execPath, join(dir, "query.ts"), mac, family]);
      const t = setTimeout(() => p.kill("SIGKILL"), 20_000);
      const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      clearTimeout(t);
      if (!out.trim()) throw new Error(`query failed: ${err}`);
      return JSON.parse(out.trim().split("\n").pop()!);
    },
    stop,
  };
}
