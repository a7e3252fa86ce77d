// Discovery replies naming a link-local API URL without a zone (a server set up with --address fe80::1): the node
// adds the index of the interface the reply came in on. Responder in one network namespace, query in another, over a
// veth pair the test creates (test/helpers/netns.ts).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { removeScratchDirs } from "../helpers/tmp";
import { startDiscoveryPair, type DiscoveryPair } from "../helpers/discovery-pair";

const MAC = "52:54:00:12:34:57";
let pair: DiscoveryPair;

beforeAll(async () => {
  pair = await startDiscoveryPair({ mac: MAC, serverId: "srv-ll", apiUrls: (a) => ["https://[fe80::1]:8443", `https://${a}:8443`] });
}, 60_000);

afterAll(async () => {
  await pair?.stop();
  removeScratchDirs();
}, 60_000);

test("a link-local API URL in a discovery reply gets the receiving interface's index as its zone", async () => {
  const { net } = pair;
  const idx = /^(\d+):/.exec(Bun.spawnSync(["ip", "-n", net.b, "-o", "link", "show", net.ifB]).stdout.toString())![1];
  for (const fam of ["IPv6", "IPv4"] as const) {
    const found = await pair.query(MAC, fam);
    expect(found.map((f) => f.serverId)).toEqual(["srv-ll"]);
    expect(found[0].api).toEqual([`https://[fe80::1%25${idx}]:8443`, `https://${net.addrA}:8443`]);
  }
}, 60_000);
