// The boot reporter (@airroot-report) holds nothing worth stealing. It stays in the initramfs environment after
// switch_root, in the booted OS's PID namespace, where root can read its memory (/proc/PID/mem, ptrace; no dumpable
// flag stops root). Found in review: it was handed the node's client certificate and private key to report the last
// stages, so root on the booted node could take the credential the TPM design keeps from it (sealed under a PCR
// extended before switch_root). Now PID 1 asks for a one-boot report token over mutual TLS before switch_root, and the
// reporter gets only that token: good for POST /api/v1/report with switched-root, running or boot-stalled, for its own
// node, until a final stage or its expiry; refused anywhere else, every refusal audited.
// Real components: the compiled airroot binary as the reporter (its memory read through /proc/PID/mem as root on the
// booted node would), `airroot serve` in process, curl as the client holding a token and no certificate.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { closeSync, existsSync, openSync, readFileSync, readSync } from "node:fs";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { privateAirroot } from "../helpers/boot";
import { initState, statePaths } from "../../src/server/state.ts";
import { serve, type RunningServer } from "../../src/server/serve.ts";
import { openDatabase } from "../../src/server/store/db.ts";
import { addNode, armNode, getNode, revokeNode } from "../../src/server/store/nodes.ts";
import { enrollNode, NodeApi, reportWithToken, type NodeCredential } from "../../src/client/api.ts";
import { reporterInputFor, sendBooted, startReporter } from "../../src/boot/reporter.ts";

let dir = "", state = "", url = "", siteCa = "", bin = "";
let srv: RunningServer;
let db: Awaited<ReturnType<typeof openDatabase>>;
const cred: Record<string, NodeCredential> = {};
const MACS: Record<string, string> = { n1: "52:54:00:00:14:01", n2: "52:54:00:00:14:02" };

const audit = () => readFileSync(statePaths(state).audit, "utf8");
const stage = async (n: string) => (await getNode(db, n))?.stage ?? null;
const newToken = async (n: string) => {
  const api = new NodeApi(url, siteCa, cred[n]);
  try { return (await api.reportToken()).token; } finally { await api.close(); }
};
/** A report with a token; returns the HTTP status (200 or the refusal's). */
async function report(body: Record<string, unknown>): Promise<{ status: number; code?: string }> {
  const r = await fetch(`${url}/api/v1/report`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), tls: { ca: siteCa } } as RequestInit);
  const j = await r.json() as { error?: string };
  return { status: r.status, code: j.error };
}
/** curl with no client certificate, only a token (in the body and as a bearer header). */
async function curlNoCert(method: string, path: string, token: string, body?: unknown): Promise<number> {
  const p = Bun.spawn(["curl", "-sS", "-m", "15", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", statePaths(state).siteCaCert, "-X", method,
    "-H", `authorization: Bearer ${token}`, ...(body ? ["-H", "content-type: application/json", "--data-binary", JSON.stringify(body)] : []),
    `${url}${path}`], { stdout: "pipe", stderr: "pipe" });
  const [out] = await Promise.all([new Response(p.stdout).text(), p.exited]);
  return Number(out);
}

/**
 * What root on the booted node can do: read every readable mapping of a process through /proc/PID/mem, looking for
 * `needles`. Returns which were found.
 */
function scanMemory(pid: number, needles: Buffer[]): boolean[] {
  const found = needles.map(() => false);
  const keep = Math.max(...needles.map((n) => n.length));
  const buf = Buffer.alloc(1 << 20);
  const fd = openSync(`/proc/${pid}/mem`, "r");
  try {
    for (const line of readFileSync(`/proc/${pid}/maps`, "utf8").split("\n")) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) r/.exec(line);
      if (!m || /\[(vvar|vvar_vclock|vsyscall)\]/.test(line)) continue;
      const end = parseInt(m[2], 16);
      let tail = Buffer.alloc(0);
      for (let a = parseInt(m[1], 16); a < end; a += buf.length) {
        let n = 0;
        try { n = readSync(fd, buf, 0, Math.min(buf.length, end - a), a); } catch { tail = Buffer.alloc(0); continue; }
        const hay = Buffer.concat([tail, buf.subarray(0, n)]);
        needles.forEach((x, i) => { found[i] ||= hay.includes(x); });
        tail = Buffer.from(hay.subarray(Math.max(0, hay.length - keep)));
      }
    }
  } finally { closeSync(fd); }
  return found;
}

/** Pieces of a credential that must not be in the reporter: key PEM text, the raw private scalar, the certificate. */
function credentialNeedles(c: NodeCredential): Buffer[] {
  const keyB64 = c.keyPem.replace(/-----[^-]+-----|\s/g, "");
  const certB64 = c.certPem.replace(/-----[^-]+-----|\s/g, "");
  const d = Buffer.from(createPrivateKey(c.keyPem).export({ format: "jwk" }).d!, "base64url");
  const mid = (s: string) => s.slice(Math.floor(s.length / 2) - 20, Math.floor(s.length / 2) + 20);
  return [Buffer.from(mid(keyB64), "latin1"), Buffer.from(mid(keyB64), "utf16le"), d,
    Buffer.from(mid(certB64), "latin1"), Buffer.from(mid(certB64), "utf16le"), new X509Certificate(c.certPem).raw.subarray(-64)];
}

beforeAll(async () => {
  bin = privateAirroot();
  dir = scratchDir();
  state = join(dir, "state");
  await initState(state, { addresses: ["127.0.0.1"] });
  db = await openDatabase(state);
  for (const [n, mac] of Object.entries(MACS)) await addNode(db, { name: n, macs: [mac], profile: "p", net: { mode: "dhcp" } });
  srv = await serve({ stateDir: state, listen: ["127.0.0.1:0"], discovery: false });
  url = srv.localUrls[0];
  siteCa = readFileSync(statePaths(state).siteCaCert, "utf8");
  for (const [n, mac] of Object.entries(MACS)) {
    await armNode(db, n, null);
    cred[n] = await enrollNode(url, siteCa, { macs: [mac] });
  }
}, 240_000);

afterAll(async () => {
  await srv?.close();
  await db?.close();
  removeScratchDirs();
}, 60_000);

test("the reporter's input and memory hold no part of the node credential, only the report token; it reports switched-root and running", async () => {
  const input = await reporterInputFor({ servers: [url], credential: cred.n1 }, siteCa, 30);
  expect(Object.keys(input).sort()).toEqual(["node", "servers", "siteCa", "token", "waitSec"]);
  const text = JSON.stringify(input);
  expect(text).not.toContain("PRIVATE KEY");
  expect(text).not.toContain(cred.n1.certPem.split("\n")[2]);
  expect(input.token).toMatch(/^[A-Za-z0-9_-]{43}$/);

  // The real reporter (the compiled binary), started as PID 1 starts it; a stand-in for PID 1 execs "the new init".
  const init = Bun.spawn(["sh", "-c", "sleep 1; exec sleep 120"]);
  const socket = join(dir, "report/booted.sock");
  const pid = await startReporter({ ...input, switchWaitSec: 20, socket, pid: init.pid }, 20_000, [bin]);
  try {
    for (let i = 0; i < 100 && (await stage("n1")) !== "switched-root"; i++) await Bun.sleep(100);
    expect((await stage("n1"))).toBe("switched-root");
    // Now it waits for the booted OS, beside it: what root there could read.
    const needles = [...credentialNeedles(cred.n1), Buffer.from(input.token, "latin1")];
    const found = scanMemory(pid, needles);
    expect(found.at(-1)).toBe(true); // the scan works: the token it must hold is found
    expect(found.slice(0, -1)).toEqual(needles.slice(0, -1).map(() => false));
    expect(await sendBooted(socket)).toBe("reported");
    for (let i = 0; i < 100 && (await stage("n1")) !== "running"; i++) await Bun.sleep(100);
    expect((await stage("n1"))).toBe("running");
    expect((await getNode(db, "n1"))?.stageDetail).toMatch(/^multi-user.target reached \d+ s after switch_root$/);
    for (let i = 0; i < 100 && existsSync(`/proc/${pid}`) && !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8")); i++) await Bun.sleep(100);
  } finally {
    try { process.kill(pid, "SIGKILL"); } catch {}
    init.kill("SIGKILL");
  }
  // A control: the same scan finds a key in a process that was handed one on its stdin, as the reporter used to be.
  const holder = Bun.spawn([process.execPath, "-e", "globalThis.kept = JSON.parse(await Bun.stdin.text()); setInterval(() => {}, 1000)"], { stdin: "pipe" });
  holder.stdin.write(JSON.stringify({ credential: cred.n2 }));
  await holder.stdin.end();
  await Bun.sleep(1000);
  try { expect(scanMemory(holder.pid, credentialNeedles(cred.n2).slice(0, 1))).toEqual([true]); } finally { holder.kill("SIGKILL"); }
}, 120_000);

test("a token reports running for its node; wrong, other-node, replaced, used, expired and revoked tokens are refused and audited", async () => {
  let t1 = await newToken("n1");
  const t2 = await newToken("n2");
  expect(await report({ node: "n1", token: t1, stage: "switched-root", detail: "PID 1 is /usr/lib/systemd/systemd\u009b2J" })).toEqual({ status: 200 });
  expect((await getNode(db, "n1"))?.stageDetail).toBe("PID 1 is /usr/lib/systemd/systemd 2J"); // sanitised as /self/status does

  // Wrong token, another node's token, a token for another node.
  const wrong = t1.slice(0, 42) + (t1[42] === "A" ? "B" : "A");
  expect(await report({ node: "n1", token: wrong, stage: "running" })).toEqual({ status: 401, code: "bad-report-token" });
  expect(await report({ node: "n1", token: t2, stage: "running" })).toEqual({ status: 401, code: "bad-report-token" });
  expect(await report({ node: "n2", token: t1, stage: "running" })).toEqual({ status: 401, code: "bad-report-token" });
  expect(await report({ node: "n9", token: t1, stage: "running" })).toEqual({ status: 401, code: "bad-report-token" });
  expect((await stage("n1"))).toBe("switched-root");
  expect((await stage("n2"))).toBeNull();

  // The token works through the node client too, and "running" uses it up.
  await reportWithToken(url, siteCa, { node: "n1", token: t1, stage: "running", detail: "multi-user.target reached 9 s after switch_root" });
  expect((await stage("n1"))).toBe("running");
  expect(await report({ node: "n1", token: t1, stage: "boot-stalled" })).toEqual({ status: 401, code: "bad-report-token" });
  expect((await stage("n1"))).toBe("running");

  // A new token replaces the earlier one.
  const old = await newToken("n1");
  t1 = await newToken("n1");
  expect(await report({ node: "n1", token: old, stage: "switched-root" })).toEqual({ status: 401, code: "bad-report-token" });
  expect(await report({ node: "n1", token: t1, stage: "switched-root" })).toEqual({ status: 200 });

  // Expired (the clock moved past its expiry: set it in the database).
  await db.run("UPDATE report_tokens SET expires = ? WHERE node = 'n1'", Date.now() - 1000);
  expect(await report({ node: "n1", token: t1, stage: "running" })).toEqual({ status: 401, code: "bad-report-token" });
  expect((await stage("n1"))).toBe("switched-root");

  // The certificate it was issued to revoked (`airroot node revoke`): the token dies with it.
  expect(await report({ node: "n2", token: t2, stage: "switched-root" })).toEqual({ status: 200 });
  await revokeNode(db, "n2");
  expect(await report({ node: "n2", token: t2, stage: "running" })).toEqual({ status: 401, code: "bad-report-token" });
  expect((await stage("n2"))).toBe("switched-root");
  await armNode(db, "n2", null);
  cred.n2 = await enrollNode(url, siteCa, { macs: [MACS.n2] });

  const log = audit();
  for (const reason of ["the report token does not match the node's", "the node has no report token", "expired at", "revoked or gone"])
    expect(log).toMatch(new RegExp(`"event":"report","outcome":"refused".*"reason":"[^"]*${reason}`));
  expect(log).toContain('"event":"report-token","outcome":"ok"');
  for (const t of [t1, t2, old, wrong]) expect(log).not.toContain(t); // tokens are never logged
}, 60_000);

test("a token may post only switched-root, running and boot-stalled: other stages, a digest and unknown fields are refused", async () => {
  const t = await newToken("n2");
  for (const s of ["trusted", "failed", "root-mounted", "switching-root", "reenroll"]) {
    expect(await report({ node: "n2", token: t, stage: s })).toEqual({ status: 403, code: "stage-not-allowed" });
  }
  expect(await report({ node: "n2", token: t, stage: "running", digest: "a".repeat(64) })).toEqual({ status: 400, code: "bad-request" });
  expect(await report({ node: "n2", token: t, stage: "running", credential: "x" })).toEqual({ status: 400, code: "bad-request" });
  expect((await stage("n2"))).toBe("switched-root");
  expect(audit()).toMatch(/"event":"report","outcome":"refused".*"node":"n2".*"stage":"trusted".*not one a report token may post/);
  expect(await report({ node: "n2", token: t, stage: "boot-stalled" })).toEqual({ status: 200 });
  expect((await stage("n2"))).toBe("boot-stalled");
}, 60_000);

test("a token opens nothing under /api/v1/self/: without the client certificate every call is 401", async () => {
  const t = await newToken("n1");
  expect(await curlNoCert("GET", "/api/v1/self/config", t)).toBe(401);
  expect(await curlNoCert("POST", "/api/v1/self/status", t, { stage: "running", token: t })).toBe(401);
  expect(await curlNoCert("POST", "/api/v1/self/sshcert", t, { hostKeys: ["ssh-ed25519 AAAA"], token: t })).toBe(401);
  expect(await curlNoCert("POST", "/api/v1/self/report-token", t, { node: "n1", token: t })).toBe(401);
  // ... and it still works where it should.
  expect(await curlNoCert("POST", "/api/v1/report", t, { node: "n1", token: t, stage: "running" })).toBe(200);
  expect(audit()).toMatch(/"event":"mtls","outcome":"refused".*"path":"\/api\/v1\/self\/report-token"/);
}, 60_000);

test("an airroot.db from before report tokens gets their table when opened; its nodes and certificates keep working", async () => {
  const d = join(scratchDir(), "state");
  await initState(d, { addresses: ["127.0.0.1"] });
  let old = await openDatabase(d);
  await addNode(old, { name: "n3", macs: ["52:54:00:00:14:03"], profile: "p", net: { mode: "dhcp" } });
  await armNode(old, "n3", null);
  // Make it the database an earlier airroot left: no report_tokens table, its migration never applied.
  await old.exec("DROP TABLE report_tokens; DELETE FROM schema_applied WHERE id = 'nodes-v4-report-tokens'");
  expect(await old.get("SELECT name FROM sqlite_master WHERE name = 'report_tokens'")).toBeNull();
  await old.close();
  const s = await serve({ stateDir: d, listen: ["127.0.0.1:0"], discovery: false });
  try {
    const ca = readFileSync(statePaths(d).siteCaCert, "utf8");
    const c = await enrollNode(s.localUrls[0], ca, { macs: ["52:54:00:00:14:03"] });
    const input = await reporterInputFor({ servers: [s.localUrls[0]], credential: c }, ca);
    await reportWithToken(s.localUrls[0], ca, { node: "n3", token: input.token, stage: "running" });
    old = await openDatabase(d);
    try { expect((await getNode(old, "n3"))?.stage).toBe("running"); } finally { await old.close(); }
  } finally { await s.close(); }
}, 60_000);

test("reports are rate limited per source address (429), and audited", async () => {
  let limited = 0;
  for (let i = 0; i < 40 && limited === 0; i++) {
    const r = await report({ node: "n1", token: "A".repeat(43), stage: "running" });
    if (r.status === 429) limited++;
    else expect(r.status).toBe(401);
  }
  expect(limited).toBe(1);
  expect(audit()).toMatch(/"event":"report","outcome":"refused".*"reason":"rate limit"/);
}, 60_000);
