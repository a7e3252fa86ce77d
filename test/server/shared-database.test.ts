// Two `airroot serve` processes on one PostgreSQL database (a real one, started in a temporary directory on
// loopback): an armed node enrolling through both at once gets exactly one certificate, a replayed enrollment is
// refused wherever it lands, a revocation made on one is refused by both at the next request, and both servers' audit
// events are rows of the one database. Also: what an operator sees when the database cannot be reached.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import type { Subprocess } from "bun";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { startPostgres, type TestPostgres } from "../helpers/postgres";
import { freePort, waitForPort } from "../helpers/ports";
import { stopProcess } from "../helpers/stop";
import { statePaths } from "../../src/server/state.ts";
import { openDatabase, type Db } from "../../src/server/store/db.ts";
import { armNode, certsOf } from "../../src/server/store/nodes.ts";
import { auditRows } from "../../src/server/store/auditlog.ts";
import { enrollNode, NodeApi, type NodeCredential } from "../../src/client/api.ts";
import { ApiCallError, ApiHttp } from "../../src/client/http.ts";
import { makeCsr } from "../../src/pki/csr.ts";
import { tpmProver } from "../../src/client/tpmprover.ts";
import { challengeFromWire } from "../../src/tpm/makecredential.ts";
import type { ChallengeResult, EnrollResult } from "../../src/server/enroll.ts";
import { startSwtpm } from "../helpers/swtpm";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const MAC = "52:54:00:00:16:01";
let pg: TestPostgres, dir = "", stateA = "", stateB = "", ca = "", db: Db;
const servers: { proc: Subprocess; url: string; log: string }[] = [];

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn([process.execPath, MAIN, ...args], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

async function mustCli(args: string[]): Promise<string> {
  const r = await cli(args);
  if (r.code !== 0) throw new Error(`airroot ${args.join(" ")}: exit ${r.code}: ${r.err}`);
  return r.out;
}

async function startServer(state: string, extra: string[] = []): Promise<{ proc: Subprocess; url: string; log: string }> {
  const port = await freePort();
  const log = join(dir, `serve-${port}.log`);
  const proc = Bun.spawn([process.execPath, MAIN, "serve", "--state", state, "--listen", `127.0.0.1:${port}`, "--no-discovery", ...extra],
    { stdout: Bun.file(log), stderr: Bun.file(`${log}.err`), stdin: "ignore" });
  try { await waitForPort("127.0.0.1", port, 30_000); } catch (e) {
    proc.kill("SIGKILL");
    throw new Error(`airroot serve on ${state} did not listen: ${(e as Error).message}; ${readFileSync(`${log}.err`, "utf8")}`);
  }
  return { proc, url: `https://127.0.0.1:${port}`, log };
}

beforeAll(async () => {
  pg = await startPostgres();
  dir = scratchDir();
  stateA = join(dir, "a");
  stateB = join(dir, "b");
  await mustCli(["serve", "init", "--state", stateA, "--address", "127.0.0.1"]);
  // The database is set through the config command; the password stays in its own file.
  await mustCli(["serve", "config", "set", "db", pg.url, "--state", stateA]);
  await mustCli(["serve", "config", "set", "db-password-file", pg.passwordFile, "--state", stateA]);
  await mustCli(["node", "add", "n1", "--mac", MAC, "--profile", "p", "--state", stateA]);
  // The second server: a copy of the first's state (the same CAs and keys), as a site sets one up.
  cpSync(stateA, stateB, { recursive: true });
  ca = readFileSync(statePaths(stateA).siteCaCert, "utf8");
  servers.push(await startServer(stateA));
  servers.push(await startServer(stateB, ["--db", pg.url, "--db-password-file", pg.passwordFile])); // the flags say the same as config
  db = await openDatabase(stateA);
}, 180_000);

afterAll(async () => {
  await db?.close();
  for (const s of servers) await stopProcess(s.proc);
  await pg?.stop();
  removeScratchDirs();
}, 60_000);

const [A, B] = [0, 1];
const url = (i: number) => servers[i].url;

async function refusal(p: Promise<unknown>): Promise<ApiCallError> {
  try { await p; } catch (e) { expect(e).toBeInstanceOf(ApiCallError); return e as ApiCallError; }
  throw new Error("expected a refusal");
}

test("config.json names the database without its password; config show prints no password", async () => {
  const cfg = JSON.parse(readFileSync(statePaths(stateA).config, "utf8"));
  expect(cfg.db).toBe(pg.url);
  expect(cfg.dbPasswordFile).toBe(pg.passwordFile);
  const r = await cli(["serve", "config", "set", "db", pg.urlWithPassword, "--state", stateA]);
  expect(r.code).not.toBe(0);
  expect(r.err).toContain("db-password-file");
  expect(r.err).not.toContain(pg.password);
  expect(JSON.parse(readFileSync(statePaths(stateA).config, "utf8")).db).toBe(pg.url); // unchanged
  expect(await mustCli(["serve", "config", "show", "--state", stateA])).not.toContain(pg.password);
});

test("an armed node enrolling through both servers at once gets exactly one certificate", async () => {
  for (let round = 0; round < 6; round++) {
    if (round === 0) await mustCli(["node", "arm", "n1", "--state", stateB]); // the CLI on the other server's state: same database
    else await armNode(db, "n1", null);
    const before = (await certsOf(db, "n1")).length;
    const results = await Promise.allSettled([enrollNode(url(A), ca, { macs: [MAC] }), enrollNode(url(B), ca, { macs: [MAC] })]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const lost = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    expect(lost.reason).toBeInstanceOf(ApiCallError);
    expect((lost.reason as ApiCallError).code).toBe("identity-mismatch"); // the window was claimed by the other one
    const certs = await certsOf(db, "n1");
    expect(certs).toHaveLength(before + 1);
    expect(certs.filter((c) => c.revoked === null)).toHaveLength(1);
  }
});

test("a replayed enrollment is refused on either server", async () => {
  const { csrPem } = await makeCsr("n1");
  const body = { macs: [MAC], csr: csrPem };
  const post = (i: number) => new ApiHttp(url(i), { ca }).call("POST", "/api/v1/enroll", body);
  await armNode(db, "n1", null);
  await post(A);
  for (const i of [B, A]) {
    await armNode(db, "n1", null);
    const e = await refusal(post(i));
    expect([e.status, e.code]).toEqual([409, "replay"]);
  }
  // The same request through both at once: one certificate, the other refused (window gone or key used).
  const fresh = { macs: [MAC], csr: (await makeCsr("n1")).csrPem };
  await armNode(db, "n1", null);
  const before = (await certsOf(db, "n1")).length;
  const both = await Promise.allSettled([A, B].map((i) => new ApiHttp(url(i), { ca }).call("POST", "/api/v1/enroll", fresh)));
  expect(both.filter((r) => r.status === "fulfilled")).toHaveLength(1);
  expect(["identity-mismatch", "replay"]).toContain(((both.find((r) => r.status === "rejected") as PromiseRejectedResult).reason as ApiCallError).code);
  expect(await certsOf(db, "n1")).toHaveLength(before + 1);
});

test("revoked through one server's state: both servers refuse the certificate at the next request", async () => {
  await armNode(db, "n1", null);
  const cred: NodeCredential = await enrollNode(url(A), ca, { macs: [MAC] });
  const apis = [new NodeApi(url(A), ca, cred), new NodeApi(url(B), ca, cred)];
  try {
    for (const api of apis) expect((await api.config()).name).toBe("n1");
    expect(await mustCli(["node", "revoke", "n1", "--state", stateA])).toContain("revoked 1 certificate");
    // No wait: nothing is cached in either server.
    for (const api of apis) {
      const e = await refusal(api.config());
      expect([e.status, e.code]).toEqual([401, "unauthenticated"]);
    }
  } finally { for (const api of apis) await api.close(); }
});

test("both servers' audit events are rows of the one database (and lines of each audit.log)", async () => {
  const pids = servers.map((s) => s.proc.pid);
  // The trail is written behind each request: give the last inserts a moment.
  let rows = await auditRows(db);
  for (let i = 0; i < 50 && !pids.every((p) => rows.some((r) => r.server.endsWith(`[${p}]`) && r.event === "mtls")); i++) {
    await Bun.sleep(100);
    rows = await auditRows(db);
  }
  for (const pid of pids) {
    const mine = rows.filter((r) => r.server.endsWith(`[${pid}]`));
    expect(mine.some((r) => r.event === "enroll" && r.outcome === "ok")).toBe(true);
    expect(mine.some((r) => r.event === "enroll" && r.outcome === "refused")).toBe(true);
    expect(mine.some((r) => r.event === "mtls" && r.outcome === "refused" && /revoked/.test(r.line))).toBe(true);
  }
  expect(rows.some((r) => r.server.startsWith("cli@") && r.event === "node.revoke")).toBe(true);
  expect(rows.filter((r) => r.event === "node.arm").length).toBeGreaterThanOrEqual(1);
  for (const r of rows) expect(JSON.parse(r.line)).toMatchObject({ event: r.event, outcome: r.outcome });
  // Every ok enrollment in the database is one certificate.
  const issued = rows.filter((r) => r.event === "enroll" && r.outcome === "ok" && r.node === "n1").length;
  expect(issued).toBe((await certsOf(db, "n1")).length);
  for (const s of [stateA, stateB]) expect(readFileSync(statePaths(s).audit, "utf8")).toMatch(/"event":"enroll","outcome":"ok"/);
});

test("a TPM challenge issued by one server is answered through the other, once", async () => {
  const tpm = await startSwtpm(join(dir, "tpm"));
  try {
    await mustCli(["node", "add", "t1", "--mac", "52:54:00:00:16:31", "--profile", "p", "--state", stateA]);
    await armNode(db, "t1", null);
    const prover = await tpmProver(tpm.spec);
    const { csrPem } = await makeCsr("t1");
    const ch = await new ApiHttp(url(A), { ca }).call<ChallengeResult>("POST", "/api/v1/enroll", { macs: ["52:54:00:00:16:31"], csr: csrPem, tpm: prover.identity });
    const blob = challengeFromWire(ch.challenge);
    const answer = { id: ch.challenge.id, secret: Buffer.from(await prover.activate(blob.credentialBlob, blob.secret)).toString("base64") };
    const done = await new ApiHttp(url(B), { ca }).call<EnrollResult>("POST", "/api/v1/enroll/activate", answer);
    expect(done.node).toBe("t1");
    const again = await refusal(new ApiHttp(url(A), { ca }).call("POST", "/api/v1/enroll/activate", answer));
    expect([again.status, again.code]).toEqual([403, "unknown-challenge"]);
    expect(await certsOf(db, "t1")).toHaveLength(1);
  } finally { await tpm.stop(); }
}, 120_000);

test("GET /metrics on either server counts the shared database's nodes", async () => {
  await mustCli(["node", "add", "n2", "--mac", "52:54:00:00:16:02", "--profile", "p", "--state", stateB]);
  for (const i of [A, B]) {
    const page = await (await fetch(`${url(i)}/metrics`, { tls: { ca } } as RequestInit)).text();
    expect(page).toMatch(/^airroot_serve_nodes\{stage="none"\} 3$/m);
  }
});

test("a site moves from SQLite to PostgreSQL with copy-db: its enrolled node stays enrolled", async () => {
  const state = join(dir, "moving");
  const mac = "52:54:00:00:16:41";
  await mustCli(["serve", "init", "--state", state, "--address", "127.0.0.1"]);
  await mustCli(["node", "add", "m1", "--mac", mac, "--profile", "p", "--state", state]);
  await mustCli(["node", "arm", "m1", "--state", state]);
  const siteCa = readFileSync(statePaths(state).siteCaCert, "utf8");
  let srv = await startServer(state);
  const cred = await enrollNode(srv.url, siteCa, { macs: [mac] });
  await stopProcess(srv.proc);

  const target = await pg.createDatabase("moved");
  const out = await mustCli(["serve", "copy-db", "--state", state, "--db", target, "--db-password-file", pg.passwordFile]);
  expect(out).toMatch(/^nodes: 1 row\(s\)$/m);
  expect(out).toMatch(/^node_certs: 1 row\(s\)$/m);
  expect(out).not.toContain(pg.password);
  const again = await cli(["serve", "copy-db", "--state", state, "--db", target, "--db-password-file", pg.passwordFile]);
  expect(again.code).toBe(1);
  expect(again.err).toContain("already holds records");

  await mustCli(["serve", "config", "set", "db", target, "--state", state]);
  await mustCli(["serve", "config", "set", "db-password-file", pg.passwordFile, "--state", state]);
  srv = await startServer(state);
  servers.push(srv); // stopped in afterAll
  const api = new NodeApi(srv.url, siteCa, cred);
  try { expect((await api.config()).name).toBe("m1"); } finally { await api.close(); }
  const moved = await openDatabase(state);
  try {
    expect((await certsOf(moved, "m1")).map((c) => c.serial)).toEqual([cred.serial.toUpperCase().replace(/^0+/, "")]);
    expect((await auditRows(moved)).some((r) => r.event === "enroll" && r.outcome === "ok" && r.node === "m1")).toBe(true);
    // New audit rows continue after the copied ids (the sequence was moved past them).
    await mustCli(["node", "arm", "m1", "--state", state]);
    const rows = await auditRows(moved);
    expect(new Set(rows.map((r) => r.id)).size).toBe(rows.length);
    expect(rows.at(-1)!.event).toBe("node.arm");
  } finally { await moved.close(); }
}, 120_000);

test("a database that cannot be reached: serve fails at start, naming the URL without the password and what to check", async () => {
  const closed = await freePort();
  const state = join(dir, "c");
  cpSync(stateA, state, { recursive: true });
  const r = await cli(["serve", "--state", state, "--listen", "127.0.0.1:0", "--no-discovery", "--db", `postgres://airroot:hunter2secret@127.0.0.1:${closed}/airroot`]);
  expect(r.code).toBe(1);
  expect(r.err).toContain(`connecting to the database postgres://airroot@127.0.0.1:${closed}/airroot`);
  expect(r.err).toMatch(/is PostgreSQL running/);
  expect(r.err).toContain("--db holds a password"); // and says to use --db-password-file instead
  expect(r.err).not.toContain("hunter2secret");

  const wrong = join(dir, "wrong-password");
  writeFileSync(wrong, "not-the-password\n", { mode: 0o600 });
  const w = await cli(["serve", "--state", state, "--listen", "127.0.0.1:0", "--no-discovery", "--db-password-file", wrong]);
  expect(w.code).toBe(1);
  expect(w.err).toContain(`connecting to the database ${pg.url}`);
  expect(w.err).toMatch(/password/);
  expect(w.err).toContain("db-password-file");
  expect(w.err).not.toContain("not-the-password");
}, 60_000);
