// SSH host certificate principals come from the node's record (name, FQDN, static address), never from the address a
// request came from. Found in review: /api/v1/self/sshcert added the TCP source address, so a node sending from
// another node's address got a certificate for that address, and `ssh` with @cert-authority accepted it.
// Here a DHCP node calls from 127.0.0.5 (a loopback alias), the recorded static address of another node; a real ssh
// client with StrictHostKeyChecking=yes must refuse a real sshd presenting the impostor's certificate for 127.0.0.5.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync, writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { startSshd, sshWithCa } from "../helpers/sshd";
import { initState, statePaths } from "../../src/server/state.ts";
import { serve, type RunningServer } from "../../src/server/serve.ts";
import { openDatabase } from "../../src/server/store/db.ts";
import { addNode, armNode } from "../../src/server/store/nodes.ts";
import { enrollNode, NodeApi, type NodeCredential, type SshCertReply } from "../../src/client/api.ts";

const VICTIM_IP = "127.0.0.5", OTHER_IP = "127.0.0.6";
let dir = "", state = "", url = "", siteCa = "", srv: RunningServer;
let db: Awaited<ReturnType<typeof openDatabase>>;
const creds: Record<string, NodeCredential> = {};

function hostKey(name: string): string {
  const f = join(dir, `hk-${name}`);
  expect(Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f]).exitCode).toBe(0);
  return f;
}

/** POST self/sshcert with the node's client certificate, sent from `source` (curl --interface binds that address). */
async function sshcertFrom(node: string, source: string, pub: string): Promise<SshCertReply> {
  const cert = join(dir, `${node}.crt`), key = join(dir, `${node}.key`);
  writeFileSync(cert, creds[node].certPem);
  writeFileSync(key, creds[node].keyPem, { mode: 0o600 });
  const p = Bun.spawn(["curl", "-sS", "-m", "15", "--fail-with-body", "--interface", source, "--cacert", statePaths(state).siteCaCert,
    "--cert", cert, "--key", key, "-H", "content-type: application/json",
    "--data-binary", JSON.stringify({ hostKeys: [readFileSync(pub, "utf8")] }), `${url}/api/v1/self/sshcert`], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`curl: ${err} ${out}`);
  return JSON.parse(out) as SshCertReply;
}

beforeAll(async () => {
  dir = scratchDir();
  state = join(dir, "state");
  await initState(state, { addresses: ["127.0.0.1"], domain: "cluster.test" });
  db = await openDatabase(state);
  await addNode(db, { name: "victim", macs: ["52:54:00:00:13:01"], profile: "p", net: { mode: "static", ip: `${VICTIM_IP}/8`, dns: [] } });
  await addNode(db, { name: "impostor", macs: ["52:54:00:00:13:02"], profile: "p", net: { mode: "dhcp" } });
  await addNode(db, { name: "other", macs: ["52:54:00:00:13:03"], profile: "p", net: { mode: "static", ip: `${OTHER_IP}/8`, dns: [] } });
  srv = await serve({ stateDir: state, listen: ["127.0.0.1:0"], discovery: false, configCheckMs: 0 });
  url = srv.localUrls[0];
  siteCa = readFileSync(statePaths(state).siteCaCert, "utf8");
  for (const [name, mac] of [["victim", "52:54:00:00:13:01"], ["impostor", "52:54:00:00:13:02"], ["other", "52:54:00:00:13:03"]]) {
    await armNode(db, name, null);
    creds[name] = await enrollNode(url, siteCa, { macs: [mac] });
  }
}, 60_000);

afterAll(async () => { await srv?.close(); db?.close(); removeScratchDirs(); }, 60_000);

test("a node calling from another node's address gets no principal for that address", async () => {
  const hk = hostKey("impostor");
  const r = await sshcertFrom("impostor", VICTIM_IP, hk + ".pub");
  // The request really came from the victim's address: the audit line says so.
  const line = readFileSync(statePaths(state).audit, "utf8").trim().split("\n").map((l) => JSON.parse(l))
    .filter((e) => e.event === "sshcert" && e.node === "impostor").pop();
  expect(line.remote.replace(/^::ffff:/, "")).toBe(VICTIM_IP);
  expect(r.principals).toEqual(["impostor", "impostor.cluster.test"]);
  const listed = Bun.spawnSync(["ssh-keygen", "-L", "-f", "-"], { stdin: Buffer.from(r.certificates[0].certificate) }).stdout.toString();
  expect(listed).toContain("impostor.cluster.test");
  expect(listed).not.toContain(VICTIM_IP);

  // A node with its own static address, calling from the victim's: its own address, not the victim's.
  const other = await sshcertFrom("other", VICTIM_IP, hostKey("other") + ".pub");
  expect(other.principals).toEqual(["other", "other.cluster.test", OTHER_IP]);
}, 60_000);

test("ssh with @cert-authority refuses the impostor's certificate for the victim's address; the victim's own passes", async () => {
  const caPub = readFileSync(statePaths(state).sshCaPub, "utf8");
  const hk = hostKey("impostor-sshd");
  const r = await sshcertFrom("impostor", VICTIM_IP, hk + ".pub");
  writeFileSync(hk + "-cert.pub", r.certificates[0].certificate);
  const sshd = await startSshd(join(dir, "sshd-impostor"), hk, hk + "-cert.pub");
  try {
    const posing = await sshWithCa(sshd, dir, caPub, VICTIM_IP);
    expect(posing.code).not.toBe(0);
    expect(posing.err).toContain("Host key verification failed");
    // The certificate itself is good: for the impostor's own name ssh accepts it.
    expect((await sshWithCa(sshd, dir, caPub, "impostor.cluster.test")).code).toBe(0);
  } finally { await sshd.stop(); }

  // The victim's recorded static address stays a principal of the victim's certificate, from any source.
  const vk = hostKey("victim-sshd");
  const api = new NodeApi(url, siteCa, creds.victim);
  try {
    const v = await api.sshCertificates([readFileSync(vk + ".pub", "utf8")]);
    expect(v.principals).toEqual(["victim", "victim.cluster.test", VICTIM_IP]);
    writeFileSync(vk + "-cert.pub", v.certificates[0].certificate);
  } finally { await api.close(); }
  const real = await startSshd(join(dir, "sshd-victim"), vk, vk + "-cert.pub");
  try { expect((await sshWithCa(real, dir, caPub, VICTIM_IP)).code).toBe(0); } finally { await real.stop(); }
}, 60_000);
