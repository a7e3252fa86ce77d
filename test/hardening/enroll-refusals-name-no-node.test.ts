// Enrollment refusals tell an unauthenticated caller nothing about which node owns a MAC or UUID: every identity
// refusal (unknown, several nodes, other name/UUID/MAC than recorded, not armed, window expired) is the same 403
// "identity does not match an armed node"; the detail is only in the audit log. Found in review: the messages named
// the owning node ("... belong to node-a", "node node-a cannot enroll: it is not armed; run `airroot node arm node-a`").
// Real components: the airroot binary (serve, node, enroll with swtpm) and curl as the unauthenticated caller.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { startServeProcess, type ServeProcess } from "../helpers/serve-process";
import { privateAirroot } from "../helpers/boot";
import { startSwtpm } from "../helpers/swtpm";
import { statePaths } from "../../src/server/state.ts";

const A = { name: "secret-a", mac: "52:54:00:00:13:31", uuid: "4c4c4544-0000-1313-3131-000000000031" };
const B = { name: "secret-b", mac: "52:54:00:00:13:32", uuid: "4c4c4544-0000-1313-3131-000000000032" };
const T = { name: "secret-t", mac: "52:54:00:00:13:33" };
const UNKNOWN_MAC = "52:54:00:00:13:39", UNKNOWN_UUID = "4c4c4544-0000-1313-3131-000000000039";
let dir = "", state = "", url = "", bin = "", srv: ServeProcess | undefined;

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn([bin, ...args], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

async function enroll(body: Record<string, unknown>): Promise<{ status: number; body: string }> {
  const p = Bun.spawn(["curl", "-sS", "-m", "15", "-w", "\n%{http_code}", "--cacert", statePaths(state).siteCaCert,
    "-H", "content-type: application/json", "--data-binary", JSON.stringify({ csr: "not a CSR: identity is checked first", ...body }),
    `${url}/api/v1/enroll`], { stdout: "pipe", stderr: "pipe" });
  const [out] = await Promise.all([new Response(p.stdout).text(), p.exited]);
  const i = out.lastIndexOf("\n");
  return { status: Number(out.slice(i + 1)), body: out.slice(0, i) };
}

const auditLog = () => readFileSync(statePaths(state).audit, "utf8");
const NAMES = /secret-[abt]/;

beforeAll(async () => {
  bin = privateAirroot();
  dir = scratchDir();
  state = join(dir, "state");
  expect((await run(["serve", "init", "--state", state, "--address", "127.0.0.1"])).code).toBe(0);
  for (const n of [A, B]) expect((await run(["node", "add", n.name, "--state", state, "--mac", n.mac, "--uuid", n.uuid, "--profile", "p"])).code).toBe(0);
  expect((await run(["node", "add", T.name, "--state", state, "--mac", T.mac, "--profile", "p"])).code).toBe(0);
  srv = await startServeProcess([bin], state);
  url = srv.url;
}, 180_000);

afterAll(async () => { await srv?.stop(); removeScratchDirs(); }, 60_000);

test("every identity refusal is the same 403 without a node name; the audit log has the reason", async () => {
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ["unknown MAC and UUID", { macs: [UNKNOWN_MAC], uuid: UNKNOWN_UUID }, /no node is registered with these MACs or UUID/],
    ["MACs of two nodes", { macs: [A.mac, B.mac] }, /belong to several nodes \(secret-a, secret-b\)/],
    ["another name", { macs: [A.mac], uuid: A.uuid, name: "guess" }, /the request names guess but its MACs\/UUID belong to secret-a/],
    ["the wrong UUID", { macs: [A.mac], uuid: UNKNOWN_UUID }, /does not match the one recorded for secret-a/],
    ["a known UUID with unknown MACs", { macs: [UNKNOWN_MAC], uuid: B.uuid }, /none of the MACs matches those recorded for secret-b/],
    ["the right identity, not armed", { macs: [A.mac], uuid: A.uuid }, /node secret-a cannot enroll: it is not armed/],
  ];
  const bodies = new Set<string>();
  for (const [what, req, reason] of cases) {
    const before = auditLog().length;
    const r = await enroll(req);
    expect(`${what}: ${r.status}`).toBe(`${what}: 403`);
    expect(r.body).not.toMatch(NAMES);
    const e = JSON.parse(r.body);
    expect(e.error).toBe("identity-mismatch");
    expect(e.message).toStartWith("identity does not match an armed node");
    bodies.add(r.body);
    expect(auditLog().slice(before)).toMatch(reason);
  }
  // An expired window: the same answer.
  expect((await run(["node", "arm", A.name, "--state", state, "--for", "1s"])).code).toBe(0);
  await Bun.sleep(1500);
  const expired = await enroll({ macs: [A.mac], uuid: A.uuid });
  expect(expired.status).toBe(403);
  bodies.add(expired.body);
  expect(auditLog()).toMatch(/node secret-a cannot enroll: its enrollment window expired/);
  expect([...bodies]).toHaveLength(1);
}, 120_000);

test("an EK mismatch does not name the node either", async () => {
  const tpm = await startSwtpm(join(dir, "tpm"));
  try {
    expect((await run(["node", "arm", T.name, "--state", state, "--once"])).code).toBe(0);
    const e = await run(["enroll", "--server", url, "--ca", statePaths(state).siteCaCert, "--mac", T.mac, "--tpm", tpm.spec]);
    expect(e.out).toContain(`enrolled as ${T.name}`);
  } finally { await tpm.stop(); }
  expect((await run(["node", "arm", T.name, "--state", state, "--once"])).code).toBe(0);
  const r = await enroll({ macs: [T.mac] }); // no TPM identity, where the node enrolled with one
  expect(r.status).toBe(409);
  expect(JSON.parse(r.body).error).toBe("ek-mismatch");
  expect(r.body).toContain("--new-tpm");
  expect(r.body).not.toMatch(NAMES);
  expect(auditLog()).toMatch(/node secret-t enrolled before with another TPM endorsement key/);
}, 120_000);
