// The node API end to end over real TLS: enrollment rules, mutual TLS, config, SSH certificates, status, bad input.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync, writeFileSync, statSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { makeTestPki } from "../helpers/pki";
import { startSshd, sshWithCa } from "../helpers/sshd";
import { initState, statePaths, readConfig, writeConfig } from "../../src/server/state.ts";
import { serve, type RunningServer } from "../../src/server/serve.ts";
import { openDatabase } from "../../src/server/store/db.ts";
import { addNode, armNode, certsOf, getNode, revokeNode } from "../../src/server/store/nodes.ts";
import { addImage, setProfile } from "../../src/server/store/images.ts";
import { enrollNode, NodeApi, type NodeCredential } from "../../src/client/api.ts";
import { ApiCallError } from "../../src/client/http.ts";
import { makeCsr, verifyCsr } from "../../src/pki/csr.ts";
import { issueClientCert, loadCa } from "../../src/pki/x509ca.ts";
import { toPem } from "../../src/pki/pem.ts";

const MAC = "52:54:00:00:00:07", UUID = "4c4c4544-0000-1111-2222-333344445555";
let dir: string, state: string, srv: RunningServer, url: string, siteCa: string;
let db: Awaited<ReturnType<typeof openDatabase>>;
const DIGEST = "a".repeat(64);

function audit(): string { return readFileSync(statePaths(state).audit, "utf8"); }

async function expectCallError(p: Promise<unknown>, status: number, code?: string): Promise<ApiCallError> {
  try { await p; } catch (e) {
    expect(e).toBeInstanceOf(ApiCallError);
    const a = e as ApiCallError;
    expect(a.status).toBe(status);
    if (code) expect(a.code).toBe(code);
    return a;
  }
  throw new Error(`expected HTTP ${status}, got success`);
}

async function curl(args: string[]): Promise<{ status: number; body: string }> {
  const p = Bun.spawn(["curl", "-sS", "-m", "10", "--cacert", statePaths(state).siteCaCert, "-w", "\n%{http_code}", ...args], { stdout: "pipe", stderr: "pipe" });
  const out = await new Response(p.stdout).text();
  await p.exited;
  const i = out.lastIndexOf("\n");
  return { status: Number(out.slice(i + 1)), body: out.slice(0, i) };
}

beforeAll(async () => {
  dir = scratchDir();
  state = join(dir, "state");
  await initState(state, { addresses: ["127.0.0.1"], domain: "cluster.test" });
  const c = readConfig(state);
  c.rootAuthorizedKeys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEbUGv+fakefakefakefakefakefakefakefakefake admin"];
  writeConfig(state, c);
  db = await openDatabase(state);
  await addNode(db, { name: "node07", macs: [MAC], uuid: UUID, profile: "compute", net: { mode: "static", ip: "10.0.2.17/24", gateway: "10.0.2.2", dns: ["10.0.2.3"] } });
  await addImage(db, { digest: DIGEST, size: 4096, created: Date.now(), profile: "compute" });
  await setProfile(db, "compute", DIGEST);
  srv = await serve({ stateDir: state, listen: ["127.0.0.1:0"], discovery: false });
  url = srv.localUrls[0];
  siteCa = readFileSync(statePaths(state).siteCaCert, "utf8");
}, 60_000);

afterAll(async () => {
  await srv?.close();
  await db?.close();
  removeScratchDirs();
}, 60_000);

let cred: NodeCredential;

test("enrollment is refused while the node is not armed, and nothing is stored", async () => {
  await expectCallError(enrollNode(url, siteCa, { macs: [MAC], uuid: UUID }), 403, "identity-mismatch");
  expect(await certsOf(db, "node07")).toHaveLength(0);
  expect(audit()).toContain('"event":"enroll","outcome":"refused"');
}, 60_000);

test("wrong MAC or wrong UUID is refused even when armed; the window stays open", async () => {
  await armNode(db, "node07", null);
  await expectCallError(enrollNode(url, siteCa, { macs: ["52:54:00:00:00:99"], uuid: UUID.replace("5555", "6666") }), 403, "identity-mismatch");
  await expectCallError(enrollNode(url, siteCa, { macs: [MAC], uuid: UUID.replace("5555", "6666") }), 403, "identity-mismatch");
  await expectCallError(enrollNode(url, siteCa, { macs: [MAC], uuid: UUID, name: "node08" }), 403, "identity-mismatch");
  expect(await certsOf(db, "node07")).toHaveLength(0);
  expect((await getNode(db, "node07"))!.armed).toBe(true);
}, 60_000);

test("an armed node on a trusted network enrolls once; the window closes; a replayed request is refused", async () => {
  const { csrPem } = await makeCsr("node07");
  const body = JSON.stringify({ macs: [MAC], uuid: UUID, csr: csrPem });
  const first = await curl(["-H", "content-type: application/json", "--data-binary", body, `${url}/api/v1/enroll`]);
  expect(first.status).toBe(200);
  expect(JSON.parse(first.body).node).toBe("node07");
  expect((await getNode(db, "node07"))!.armed).toBe(false);
  const replay = await curl(["-H", "content-type: application/json", "--data-binary", body, `${url}/api/v1/enroll`]);
  expect(replay.status).toBe(403);
  // Even with the node armed again, the same request (same key) is a replay.
  await armNode(db, "node07", null);
  const replay2 = await curl(["-H", "content-type: application/json", "--data-binary", body, `${url}/api/v1/enroll`]);
  expect(replay2.status).toBe(409);
  expect(JSON.parse(replay2.body).error).toBe("replay");
  expect(await certsOf(db, "node07")).toHaveLength(1);
  // The client module enrolls with a fresh key.
  cred = await enrollNode(url, siteCa, { macs: [MAC, "52:54:00:00:00:08"], uuid: UUID });
  expect(cred.node).toBe("node07");
  expect(cred.keyPem).toContain("PRIVATE KEY");
  expect(await certsOf(db, "node07")).toHaveLength(2);
  expect(audit()).toContain('"event":"enroll","outcome":"ok"');
  expect(audit()).not.toContain("PRIVATE KEY");
}, 60_000);

test("an expired enrollment window is refused", async () => {
  await armNode(db, "node07", Date.now() + 150);
  await Bun.sleep(300);
  const e = await expectCallError(enrollNode(url, siteCa, { macs: [MAC], uuid: UUID }), 403, "identity-mismatch");
  expect(e.message).toContain("identity does not match an armed node");
  expect(audit()).toContain("its enrollment window expired");
  expect(await certsOf(db, "node07")).toHaveLength(2);
}, 60_000);

test("GET self/config with the client certificate returns the node's settings", async () => {
  const api = new NodeApi(url, siteCa, cred);
  try {
    const c = await api.config();
    expect(c.name).toBe("node07");
    expect(c.fqdn).toBe("node07.cluster.test");
    expect(c.network).toEqual({ mode: "static", ip: "10.0.2.17/24", gateway: "10.0.2.2", dns: ["10.0.2.3"] });
    expect(c.profile).toBe("compute");
    expect(c.image?.digest).toBe(DIGEST);
    // Nodes are told the configured address at the configured port (443), not the listener 127.0.0.1:<random>.
    const told = "https://127.0.0.1";
    expect(srv.baseUrls).toEqual([told]);
    expect(c.image?.urls).toEqual([`${told}/images/${DIGEST}.sfs`]);
    expect(c.image?.manifestUrls).toEqual([`${told}/images/${DIGEST}.manifest`]);
    expect(c.imagePublicKey).toContain("BEGIN PUBLIC KEY");
    expect(c.sshCaPublicKey).toStartWith("ssh-ed25519 ");
    expect(c.rootAuthorizedKeys).toHaveLength(1);
    expect(c.servers).toEqual([told]);
    expect(Math.abs(Date.parse(c.serverTime) - Date.now())).toBeLessThan(60_000);
    expect(JSON.stringify(c)).not.toContain("PRIVATE KEY");
  } finally { await api.close(); }
}, 60_000);

test("mTLS: no certificate, a certificate from another CA, or the site CA's server cert → 401", async () => {
  expect((await curl([`${url}/api/v1/self/config`])).status).toBe(401);
  const other = makeTestPki(join(dir, "otherpki"));
  const r = await curl(["--cert", other.serverCert, "--key", other.serverKey, `${url}/api/v1/self/config`]);
  expect(r.status).toBe(401);
  expect(JSON.parse(r.body).error).toBe("unauthenticated");
  const p = statePaths(state);
  expect((await curl(["--cert", p.serverCert, "--key", p.serverKey, `${url}/api/v1/self/config`])).status).toBe(401);
  expect(audit()).toContain('"event":"mtls","outcome":"refused"');
}, 60_000);

test("POST self/sshcert: host certificates that ssh-keygen reads and a real sshd presents to ssh", async () => {
  const hk = join(dir, "ssh_host_ed25519_key");
  expect(Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hk]).exitCode).toBe(0);
  const api = new NodeApi(url, siteCa, cred);
  try {
    const r = await api.sshCertificates([readFileSync(hk + ".pub", "utf8")]);
    expect(r.principals).toEqual(["node07", "node07.cluster.test", "10.0.2.17"]);
    writeFileSync(hk + "-cert.pub", r.certificates[0].certificate);
    const l = Bun.spawnSync(["ssh-keygen", "-L", "-f", hk + "-cert.pub"]).stdout.toString();
    expect(l).toContain("host certificate");
    expect(l).toContain(`Serial: ${r.certificates[0].serial}`);
    const sshd = await startSshd(join(dir, "sshd"), hk, hk + "-cert.pub");
    try {
      const cfg = await api.config();
      expect((await sshWithCa(sshd, dir, cfg.sshCaPublicKey, "10.0.2.17")).code).toBe(0);
      const foreign = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGAJVHpS2DckKwVDkMVoe4zJInBiEn3HWYWycAW0E2si other";
      const bad = await sshWithCa(sshd, dir, foreign);
      expect(bad.code).not.toBe(0);
      expect(bad.err).toContain("Host key verification failed");
    } finally { await sshd.stop(); }
    await expectCallError(api.sshCertificates(["ssh-dss AAAAB3NzaC1kc3MAAACBAP"]), 400, "bad-host-key");
  } finally { await api.close(); }
}, 60_000);

test("POST self/status records the boot stage", async () => {
  const api = new NodeApi(url, siteCa, cred);
  try {
    await api.status("root-mounted", "fuse up\nFAKE LINE", DIGEST);
    const n = (await getNode(db, "node07"))!;
    expect(n.stage).toBe("root-mounted");
    expect(n.stageDetail).toBe("fuse up FAKE LINE");
    await expectCallError(api.status("Bad Stage!"), 400, "bad-request");
  } finally { await api.close(); }
}, 60_000);

test("bad input: unknown fields, bad JSON, wrong content type, oversized body, traversal → clear 4xx, nothing stored", async () => {
  await armNode(db, "node07", null);
  const post = (body: string, ct = "application/json") => curl(["-H", `content-type: ${ct}`, "--data-binary", body, `${url}/api/v1/enroll`]);
  const unknown = await post(JSON.stringify({ macs: [MAC], csr: "x", admin: true }));
  expect(unknown.status).toBe(400);
  expect(JSON.parse(unknown.body).message).toContain("admin: unknown field");
  expect((await post("{not json")).status).toBe(400);
  expect((await post("{}", "text/plain")).status).toBe(415);
  const big = join(dir, "big.json");
  writeFileSync(big, JSON.stringify({ macs: [MAC], csr: "A".repeat(200_000) }));
  expect((await curl(["-H", "content-type: application/json", "--data-binary", `@${big}`, `${url}/api/v1/enroll`])).status).toBe(413);
  expect((await post(JSON.stringify({ macs: [MAC], uuid: UUID, csr: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----" }))).status).toBe(400);
  for (const p of ["/images/../keys/node-ca.key", "/images/%2e%2e/keys/node-ca.key", "/keys/node-ca.key", "/api/v1/../../keys/ssh-ca"]) {
    const r = await curl(["--path-as-is", `${url}${p}`]);
    expect(r.status).toBe(404);
    expect(r.body).not.toContain("PRIVATE KEY");
  }
  expect(await certsOf(db, "node07")).toHaveLength(2);
  expect((await getNode(db, "node07"))!.armed).toBe(true);
}, 60_000);

test("a certificate from the node CA with a recorded serial, but not the one issued, gets 401", async () => {
  const p = statePaths(state);
  const nodeCa = await loadCa(readFileSync(p.nodeCaCert, "utf8"), readFileSync(p.nodeCaKey, "utf8"));
  const { csrPem, keys } = await makeCsr("x");
  const twin = await issueClientCert(nodeCa, (await verifyCsr(csrPem)).publicKey, "node07", cred.serial);
  const keyPem = toPem("PRIVATE KEY", await crypto.subtle.exportKey("pkcs8", keys.privateKey));
  const api = new NodeApi(url, siteCa, { keyPem, certPem: twin.toString("pem") });
  try {
    const e = await expectCallError(api.config(), 401, "unauthenticated");
    expect(e.message).toContain("not the certificate this server issued");
  } finally { await api.close(); }
}, 60_000);

test("a revoked certificate gets 401 and the client is told to re-enroll", async () => {
  // The second enrollment already revoked the first certificate: one was still valid.
  expect(await revokeNode(db, "node07")).toBe(1);
  const api = new NodeApi(url, siteCa, cred);
  try {
    const e = await expectCallError(api.config(), 401, "unauthenticated");
    expect(e.needsEnrollment).toBe(true);
    expect(e.message).toContain("revoked");
  } finally { await api.close(); }
}, 60_000);

test("state files have private modes", () => {
  const p = statePaths(state);
  for (const f of [p.siteCaKey, p.serverKey, p.nodeCaKey, p.sshCaKey, p.audit, p.config]) expect(statSync(f).mode & 0o777).toBe(0o600);
  for (const d of [p.dir, p.keys]) expect(statSync(d).mode & 0o777).toBe(0o700);
}, 60_000);

test("enrollment attempts are rate limited per source address (429), and audited", async () => {
  let limited = 0;
  for (let i = 0; i < 40 && limited === 0; i++) {
    const r = await fetch(`${url}/api/v1/enroll`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}", tls: { ca: siteCa } });
    if (r.status === 429) limited++;
    else expect(r.status).toBe(400);
    await r.body?.cancel();
  }
  expect(limited).toBe(1);
  expect(audit()).toContain('"reason":"rate limit"');
}, 60_000);
