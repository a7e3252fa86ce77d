// mirror-order and mirror-weights: set through `airroot serve config` (validated, written, shown), carried by the node
// API config to a node (this server last resort while mirrors have weights), and turned by the node's root step into
// the mount's --order spread --node-id NAME --weight URL=W, live on a running server.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync, writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { initState, readConfig, statePaths } from "../../src/server/state.ts";
import { applyEdit } from "../../src/server/configedit.ts";
import { imageSourcePlan } from "../../src/server/imagesources.ts";
import { serve } from "../../src/server/serve.ts";
import { openDatabase } from "../../src/server/store/db.ts";
import { addNode, armNode } from "../../src/server/store/nodes.ts";
import { addImage, setProfile } from "../../src/server/store/images.ts";
import { enrollNode, NodeApi } from "../../src/client/api.ts";
import { chooseRootSource } from "../../src/boot/rootsource.ts";
import { rootMountArgs } from "../../src/boot/image.ts";
import { parseMountConfig } from "../../src/mount/config.ts";
import { rankSources } from "../../src/source/order.ts";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
afterAll(removeScratchDirs);

async function airroot(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn([process.execPath, MAIN, ...args], { stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

test("serve config: mirror-order and mirror-weights round trip through the CLI, with clear errors", async () => {
  const state = join(scratchDir(), "state");
  await initState(state, { addresses: ["10.0.2.100"] });
  const cfg = (...a: string[]) => airroot(["serve", "config", ...a, "--state", state]);
  expect(readConfig(state)).toMatchObject({ mirrorOrder: "spread", mirrorWeights: [] }); // the defaults
  let r = await cfg("add", "mirrors", "https://M1.example/", "https://m2.example:8443", "--weight", "10");
  expect(r.code).toBe(0);
  expect(r.out).toContain("mirrors: https://m1.example https://m2.example:8443\n");
  expect(r.out).toContain("mirror-weights: https://m1.example=10 https://m2.example:8443=10\n");
  expect((await cfg("add", "mirrors", "https://m3.example")).code).toBe(0);
  r = await cfg("add", "mirror-weights", "https://m2.example:8443=2.5", "https://10.0.2.100=0");
  expect(r.code).toBe(0);
  expect(readConfig(state).mirrorWeights).toEqual(["https://m1.example=10", "https://m2.example:8443=2.5", "https://10.0.2.100=0"]);
  r = await cfg("add", "mirror-weights", "https://m1.example=10");
  expect(r.out).toContain("(unchanged)");
  expect(r.err).toContain("note: https://m1.example=10 is already in mirror-weights");
  expect((await cfg("set", "mirror-order", "LATENCY")).out).toStartWith("mirror-order: latency\n");
  r = await cfg("add", "mirror-weights", "https://m3.example=4");
  expect(r.err).toContain("note: weights count only with mirror-order spread (now latency)");
  expect((await cfg("set", "mirror-order")).out).toStartWith("mirror-order: spread\n"); // no value: the default
  r = await cfg("remove", "mirrors", "https://m3.example");
  expect(r.err).toContain("note: https://m3.example=4 removed from mirror-weights too");
  expect((await cfg("remove", "mirror-weights", "https://10.0.2.100")).code).toBe(0);

  const show = await cfg("show");
  expect(show.out).toMatch(/^mirror-order: +spread$/m);
  expect(show.out).toContain("image sources (mirror-order spread): https://10.0.2.100 weight 0 (last resort), https://m1.example weight 10, https://m2.example:8443 weight 2.5\n");
  expect(show.out).toMatch(/^mirror-weights: +https:\/\/m1\.example=10\n +https:\/\/m2\.example:8443=2\.5$/m);
  expect(JSON.parse((await cfg("show", "mirror-weights", "--json")).out)).toEqual(["https://m1.example=10", "https://m2.example:8443=2.5"]);
  expect(JSON.parse(readFileSync(statePaths(state).config, "utf8"))).toMatchObject({ mirrorOrder: "spread", mirrorWeights: ["https://m1.example=10", "https://m2.example:8443=2.5"] });

  const before = readFileSync(statePaths(state).config, "utf8");
  for (const [args, msg] of [
    [["set", "mirror-order", "random"], 'mirror-order: "random" is not one of listed, latency, spread'],
    [["add", "mirror-weights", "https://m1.example"], 'mirror-weights: "https://m1.example" must be URL=WEIGHT'],
    [["add", "mirror-weights", "https://m1.example=-2"], 'mirror-weights: https://m1.example: "-2" is not a number from 0 (last resort) to 1000000'],
    [["add", "mirror-weights", "https://m1.example=1e3"], "is not a number from 0"],
    [["add", "mirror-weights", "http://m1.example=1"], "must start with https://"],
    [["add", "mirror-weights", "https://m9.example=1"], "mirror-weights: https://m9.example is not a mirror, a peer or a URL this server advertises; add it first"],
    [["set", "mirror-weights", "https://m1.example=1", "https://m1.example=2"], "mirror-weights: https://m1.example is given two weights"],
    [["add", "mirrors", "https://m4.example", "--weight", "lots"], 'mirror-weights: https://m4.example: "lots" is not a number'],
    [["remove", "mirrors", "https://m1.example", "--weight", "3"], "--weight goes with `config add mirrors URL... --weight W`"],
    [["add", "root-keys", "x", "--weight", "3"], "--weight goes with"],
  ] as [string[], string][]) {
    const e = await cfg(...args);
    expect([args.join(" "), e.code, e.err]).toEqual([args.join(" "), 1, expect.stringContaining(msg)]);
  }
  expect(readFileSync(statePaths(state).config, "utf8")).toBe(before); // nothing written by a refused edit
  // A hand-edited config.json with a bad entry or order is refused as a whole (a running server keeps the old one).
  for (const [bad, msg] of [['"https://m1.example=ten"', /mirrorWeights\[0\]/], ['"https://m1.example:99999=1"', /mirror-weights: "https:\/\/m1.example:99999" is not a URL/]] as const) {
    writeFileSync(statePaths(state).config, before.replace('"https://m1.example=10"', bad));
    expect(() => readConfig(state)).toThrow(msg);
  }
  writeFileSync(statePaths(state).config, before.replace('"mirrorOrder": "spread"', '"mirrorOrder": "fastest"'));
  expect(() => readConfig(state)).toThrow(/mirrorOrder: must be one of listed, latency, spread/);
  writeFileSync(statePaths(state).config, before);
}, 60_000);

test("the plan: mirrors weigh 1 unless named; this server and peers are last resort while a mirror has a weight", () => {
  const base = { mirrors: ["https://m1", "https://m2"], peers: ["https://p1"], mirrorOrder: "spread" as const, mirrorWeights: [] as string[] };
  expect(imageSourcePlan(["https://s"], base)).toEqual({ bases: ["https://s", "https://m1", "https://m2", "https://p1"], weights: [0, 1, 1, 0], order: "spread" });
  expect(imageSourcePlan(["https://s"], { ...base, mirrorWeights: ["https://m1=10", "https://s=2"] }).weights).toEqual([2, 10, 1, 0]);
  // Every mirror at 0: the servers take the nodes again (all sources in one tier).
  expect(imageSourcePlan(["https://s"], { ...base, mirrorWeights: ["https://m1=0", "https://m2=0"] }).weights).toEqual([1, 0, 0, 1]);
  expect(imageSourcePlan(["https://s"], { ...base, mirrors: [] }).weights).toEqual([1, 1]);
  const s0 = applyEdit({ ...readConfigDefaults(), mirrors: ["https://m1"] } as never, "add", "mirror-weights", ["https://m1/=3"]);
  expect(s0.config.mirrorWeights).toEqual(["https://m1=3"]);
});

function readConfigDefaults() {
  return { version: 1, serverId: "x", addresses: ["10.0.2.100"], advertise: [], port: 443, trustedSubnets: [], trustLinkLocal: true,
    trustAttached: true, mirrors: [], peers: [], mirrorOrder: "spread", mirrorWeights: [], rootAuthorizedKeys: [], discoveryPort: 0,
    nodeCertDays: 1, sshCertDays: 1, httpPort: 0, metricsSubnets: [] };
}

test("a node's config carries order and weights; its root step mounts with --order spread --node-id NAME --weight", async () => {
  const s = join(scratchDir(), "state");
  await initState(s, { addresses: ["10.0.2.100"] });
  const MAC = "52:54:00:00:00:41", DIGEST = "c".repeat(64);
  const db = await openDatabase(s);
  await addNode(db, { name: "n042", macs: [MAC], profile: "compute", net: { mode: "dhcp" } });
  await addImage(db, { digest: DIGEST, size: 4096, created: Date.now(), profile: "compute" });
  await setProfile(db, "compute", DIGEST);
  await armNode(db, "n042", null);
  expect((await airroot(["serve", "config", "add", "mirrors", "https://10.0.2.101", "https://10.0.2.102", "--state", s])).code).toBe(0);
  expect((await airroot(["serve", "config", "add", "mirrors", "https://10.0.2.103", "--weight", "10", "--state", s])).code).toBe(0);
  const srv = await serve({ stateDir: s, listen: ["127.0.0.1:0"], discovery: false, configCheckMs: 100 });
  const siteCa = readFileSync(statePaths(s).siteCaCert, "utf8");
  const api = new NodeApi(srv.localUrls[0], siteCa, await enrollNode(srv.localUrls[0], siteCa, { macs: [MAC] }));
  try {
    const config = await api.config();
    const sfs = (b: string) => `${b}/images/${DIGEST}.sfs`;
    expect(config.image).toMatchObject({
      urls: ["https://10.0.2.100", "https://10.0.2.101", "https://10.0.2.102", "https://10.0.2.103"].map(sfs),
      order: "spread", weights: [0, 1, 1, 10],
    });
    const rs = chooseRootSource({ options: { imageUrls: [], manifestUrls: [] }, config, siteImageKeyPem: "site key" })!;
    expect(rs).toMatchObject({ from: "server", order: "spread", nodeId: "n042" });
    // The URLs come in the node's own rendezvous order (for the manifest and copies), the server (weight 0) last.
    const want = rankSources("spread", config.image!.urls.map((href, i) => ({ href, weight: config.image!.weights![i] })), "n042")
      .map((i) => config.image!.urls[i]);
    expect(rs.urls).toEqual(want);
    expect(rs.urls[3]).toBe(sfs("https://10.0.2.100"));
    expect(rs.manifestUrls).toEqual(want.map((u) => u.replace(/\.sfs$/, ".manifest")));
    const args = rootMountArgs({ urls: rs.urls, caFile: "/etc/airroot/site/ca.pem", manifestUrl: "/var/lib/airroot/root.manifest",
      imageKeyFile: "/var/lib/airroot/image-key.pem", expectDigest: DIGEST, order: rs.order, nodeId: rs.nodeId, weights: rs.weights });
    expect(args.slice(0, 8)).toEqual(["--ca", "/etc/airroot/site/ca.pem", "--argv0", "@airroot-root", "--order", "spread", "--node-id", "n042"]);
    const weightArgs = args.flatMap((a, i) => (a === "--weight" ? [args[i + 1]] : []));
    expect(weightArgs.sort()).toEqual(["https://10.0.2.100=0", "https://10.0.2.101=1", "https://10.0.2.102=1", "https://10.0.2.103=10"].map((w) => w.replace(/=/, `/images/${DIGEST}.sfs=`)).sort());
    expect(args.slice(-4)).toEqual(rs.urls);
    // What `airroot mount` makes of those arguments: the same weights for the same URLs.
    const m = parseMountConfig({ positional: [...rs.urls, "/"], order: "spread", nodeId: "n042", weights: weightArgs, mounted: true });
    expect(m.weights).toEqual(rs.urls.map((u) => config.image!.weights![config.image!.urls.indexOf(u)]));

    // Live: mirror-order listed reaches the node at once; its mount then gets no --order/--node-id/--weight.
    expect((await airroot(["serve", "config", "set", "mirror-order", "listed", "--state", s])).code).toBe(0);
    const deadline = Date.now() + 10_000;
    let c2 = await api.config();
    while (c2.image?.order !== "listed" && Date.now() < deadline) { await Bun.sleep(50); c2 = await api.config(); }
    expect(c2.image?.order).toBe("listed");
    const rs2 = chooseRootSource({ options: { imageUrls: [], manifestUrls: [] }, config: c2, siteImageKeyPem: "k" })!;
    expect(rs2.urls).toEqual(c2.image!.urls);
    expect(rootMountArgs({ urls: rs2.urls, caFile: "ca.pem", order: rs2.order, nodeId: rs2.nodeId, weights: rs2.weights }))
      .toEqual(["--ca", "ca.pem", "--argv0", "@airroot-root", ...rs2.urls]);
  } finally {
    await api.close();
    await srv.close();
    await db.close();
  }
}, 60_000);

test("node side: a config from an older server (no order) spreads; unknown order, bad weights and no name are safe", () => {
  const img = { digest: "a".repeat(64), size: 1, urls: ["https://s/images/a.sfs", "https://m1/images/a.sfs", "https://m2/images/a.sfs"],
    manifestUrls: ["https://s/images/a.manifest", "https://m1/images/a.manifest", "https://m2/images/a.manifest"] };
  const pick = (image: object, name?: string) =>
    chooseRootSource({ options: { imageUrls: [], manifestUrls: [] }, config: { image: image as never, imagePublicKey: "k", name } })!;
  const old = pick(img, "n1");
  expect(old).toMatchObject({ order: "spread", nodeId: "n1", weights: undefined });
  expect([...old.urls].sort()).toEqual([...img.urls].sort());
  expect(pick({ ...img, order: "nearest" }, "n1").order).toBe("spread");
  expect(pick({ ...img, weights: [1, -1, 2] }, "n1").weights).toBeUndefined();
  expect(pick({ ...img, weights: [1, 2] }, "n1").weights).toBeUndefined();
  expect(pick({ ...img, order: "latency" }, "n1")).toMatchObject({ order: "latency", urls: img.urls });
  expect(pick(img).urls).toEqual(img.urls); // no name: as listed
  // Spread over names: each of the three first for about a third of 900 nodes.
  const firsts = new Map<string, number>();
  for (let i = 0; i < 900; i++) { const u = pick(img, `node${i}`).urls[0]; firsts.set(u, (firsts.get(u) ?? 0) + 1); }
  for (const u of img.urls) expect(Math.abs((firsts.get(u) ?? 0) - 300)).toBeLessThan(60);
});
