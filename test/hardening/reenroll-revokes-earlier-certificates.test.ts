// A new enrollment revokes the node's earlier client certificates in the same transaction that records the new one.
// Found in review: re-enrolling left the older certificates valid, so a credential copied off a node before it was
// re-enrolled (the usual answer to a suspected compromise) kept working on /api/v1/self/*.
// Real components: the airroot binary (`serve`, `node`, `enroll`) and curl as the mTLS client.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { startServeProcess, type ServeProcess } from "../helpers/serve-process";
import { privateAirroot } from "../helpers/boot";
import { statePaths } from "../../src/server/state.ts";
import { credentialPaths } from "../../src/client/credential.ts";
import { openDatabase } from "../../src/server/store/db.ts";
import { addNode, armNode, certsOf, commitEnrollment } from "../../src/server/store/nodes.ts";

const MAC = "52:54:00:00:13:21";
let dir = "", state = "", url = "", bin = "", srv: ServeProcess | undefined;

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn([bin, ...args], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

async function enroll(out: string): Promise<void> {
  expect((await run(["node", "arm", "n1", "--state", state, "--once"])).code).toBe(0);
  const e = await run(["enroll", "--server", url, "--ca", statePaths(state).siteCaCert, "--out", join(dir, out), "--mac", MAC]);
  expect(e.err).toBe("");
  expect(e.code).toBe(0);
}

/** An mTLS call with the credential in DIR; returns the HTTP status. */
async function call(cred: string, method: "GET" | "POST", path: string, body?: unknown): Promise<number> {
  const c = credentialPaths(join(dir, cred));
  const p = Bun.spawn(["curl", "-sS", "-m", "15", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", statePaths(state).siteCaCert,
    "--cert", c.cert, "--key", c.key, "-X", method,
    ...(body ? ["-H", "content-type: application/json", "--data-binary", JSON.stringify(body)] : []), `${url}${path}`], { stdout: "pipe", stderr: "pipe" });
  const [out] = await Promise.all([new Response(p.stdout).text(), p.exited]);
  return Number(out);
}

beforeAll(async () => {
  bin = privateAirroot();
  dir = scratchDir();
  state = join(dir, "state");
  expect((await run(["serve", "init", "--state", state, "--address", "127.0.0.1"])).code).toBe(0);
  expect((await run(["node", "add", "n1", "--state", state, "--mac", MAC, "--profile", "p"])).code).toBe(0);
  srv = await startServeProcess([bin], state);
  url = srv.url;
}, 180_000);

afterAll(async () => { await srv?.stop(); removeScratchDirs(); }, 60_000);

test("after a second enrollment the first credential gets 401 on every /api/v1/self/* call; the new one works", async () => {
  await enroll("first");
  expect(await call("first", "GET", "/api/v1/self/config")).toBe(200);
  await enroll("second");
  expect(await call("first", "GET", "/api/v1/self/config")).toBe(401);
  expect(await call("first", "POST", "/api/v1/self/status", { stage: "pwned" })).toBe(401);
  const hk = join(dir, "hk");
  expect(Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hk]).exitCode).toBe(0);
  expect(await call("first", "POST", "/api/v1/self/sshcert", { hostKeys: [readFileSync(hk + ".pub", "utf8")] })).toBe(401);
  expect(await call("second", "GET", "/api/v1/self/config")).toBe(200);

  const show = (await run(["node", "show", "n1", "--state", state])).out;
  expect(show.match(/REVOKED/g)).toHaveLength(1);
  expect(show.match(/ valid$/gm)).toHaveLength(1);
  const log = readFileSync(statePaths(state).audit, "utf8");
  expect(log).toMatch(/"event":"enroll","outcome":"ok".*"revokedEarlier":1/);
  expect(log).toMatch(/"event":"mtls","outcome":"refused".*was revoked/);
}, 120_000);

test("a re-enrollment refused at commit revokes nothing (one transaction)", async () => {
  const d = join(scratchDir(), "state");
  Bun.spawnSync([bin, "serve", "init", "--state", d, "--address", "127.0.0.1"]);
  const db = await openDatabase(d);
  try {
    await addNode(db, { name: "n2", macs: ["52:54:00:00:13:22"], profile: "p", net: { mode: "dhcp" } });
    const e = (serial: string, keyId: string) => ({ node: "n2", serial, keyId, notAfter: Date.now() + 86_400_000, fingerprint: serial });
    await armNode(db, "n2", null);
    expect(await commitEnrollment(db, e("A1", "key-1"))).toEqual({ ok: true, revoked: 0 });
    await armNode(db, "n2", null);
    // The same key again: refused inside the transaction, after the window was claimed; A1 must stay valid.
    expect((await commitEnrollment(db, e("A2", "key-1"))).ok).toBe(false);
    expect((await certsOf(db, "n2")).map((c) => [c.serial, c.revoked])).toEqual([["A1", null]]);
    expect(await commitEnrollment(db, e("A3", "key-3"))).toEqual({ ok: true, revoked: 1 });
    expect((await certsOf(db, "n2")).map((c) => [c.serial, c.revoked === null]).sort()).toEqual([["A1", false], ["A3", true]]);
  } finally { await db.close(); }
});
