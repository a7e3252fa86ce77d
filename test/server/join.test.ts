// A second deployment server joining a site (`serve export`, `serve init --join`) on one PostgreSQL database (a real
// one, on loopback): the same CAs and keys, a serverId and a server certificate of its own, private files 0600, an
// existing state never overwritten, and a node enrolled through the first server served by the joined one. And
// `serve status`: both servers up, a killed one stale, a cleanly stopped one stopped; on SQLite, the one server.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { cpSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { startPostgres, type TestPostgres } from "../helpers/postgres";
import { startServeProcess, type ServeProcess } from "../helpers/serve-process";
import { stopProcess } from "../helpers/stop";
import { hostsNotInServerCert, readConfig, statePaths } from "../../src/server/state.ts";
import { writeImageKey } from "../../src/image/imagekeys.ts";
import { enrollNode, NodeApi } from "../../src/client/api.ts";
import { x509 } from "../../src/pki/x509.ts";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const MAC = "52:54:00:00:17:01";
const BEAT = { AIRROOT_HEARTBEAT_MS: "200" }; // stale after 3 missed beats: 0.6 s
let pg: TestPostgres, dir = "", stateA = "", stateB = "", bundle = "", digest = "";
const servers: ServeProcess[] = [];

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

const start = async (state: string) => {
  const s = await startServeProcess([process.execPath, MAIN], state, 30_000, { env: BEAT, log: join(dir, `serve-${servers.length}.log`) });
  servers.push(s);
  return s;
};

interface StatusRow { id: string; host: string; pid: number; urls: string[]; version: string; started: number; seen: number; state: string; self: boolean }
const status = async (state: string): Promise<StatusRow[]> => JSON.parse(await mustCli(["serve", "status", "--state", state, "--json"]));

beforeAll(async () => {
  pg = await startPostgres();
  dir = scratchDir();
  stateA = join(dir, "a");
  stateB = join(dir, "b");
  bundle = join(dir, "site.bundle");
  await mustCli(["serve", "init", "--state", stateA, "--address", "127.0.0.1"]);
  await mustCli(["serve", "config", "set", "db", pg.url, "--state", stateA]);
  await mustCli(["serve", "config", "set", "db-password-file", pg.passwordFile, "--state", stateA]);
  await mustCli(["serve", "config", "set", "domain", "cluster.example", "--state", stateA]);
  await mustCli(["node", "add", "n1", "--mac", MAC, "--profile", "p", "--state", stateA]);
  digest = randomBytes(32).toString("hex");
  writeImageKey(stateA, digest, randomBytes(64)); // an encrypted image's key goes along
  expect(await mustCli(["serve", "export", "--state", stateA, "--out", bundle])).toContain("1 encrypted image key(s), the database password");
  const out = await mustCli(["serve", "init", "--state", stateB, "--join", bundle, "--address", "127.0.0.2"]);
  expect(out).toContain(`as server ${readConfig(stateB).serverId}`);
}, 180_000);

afterAll(async () => {
  for (const s of servers) await stopProcess(s.proc);
  await pg?.stop();
  removeScratchDirs();
}, 60_000);

const mode = (f: string) => statSync(f).mode & 0o777;

test("the bundle is one 0600 file with the site's keys and settings, not a server's identity", async () => {
  expect(mode(bundle)).toBe(0o600);
  const b = JSON.parse(readFileSync(bundle, "utf8"));
  const names = b.files.map((f: { name: string }) => f.name);
  expect(names).toContain("keys/site-ca.key");
  expect(names).toContain(`image-keys/${digest}.key`);
  expect(names).not.toContain("keys/server.key");
  expect(b.config.serverId).toBeUndefined();
  expect(b.config.db).toBe(pg.url);
  const again = await cli(["serve", "export", "--state", stateA, "--out", bundle]);
  expect(again.code).toBe(1);
  expect(again.err).toContain(`${bundle} already exists`);
});

test("the joined server: the site's CAs and keys, its own serverId and certificate (from the site CA, naming its address), 0600 keys", async () => {
  const [a, b] = [statePaths(stateA), statePaths(stateB)];
  const thumb = async (f: string) => Buffer.from(await new x509.X509Certificate(readFileSync(f, "utf8")).getThumbprint("SHA-256")).toString("hex");
  for (const f of ["siteCaCert", "nodeCaCert"] as const) expect(await thumb(b[f])).toBe(await thumb(a[f]));
  for (const f of ["siteCaKey", "nodeCaKey", "sshCaKey", "sshCaPub"] as const) expect(readFileSync(b[f], "utf8")).toBe(readFileSync(a[f], "utf8"));
  for (const f of ["keys/image.key", "keys/image.pub", `image-keys/${digest}.key`]) expect(readFileSync(join(stateB, f), "utf8")).toBe(readFileSync(join(stateA, f), "utf8"));

  const [ca, cb] = [readConfig(stateA), readConfig(stateB)];
  expect(cb.serverId).not.toBe(ca.serverId);
  expect(cb.addresses).toEqual(["127.0.0.2"]);
  expect([cb.db, cb.domain]).toEqual([pg.url, "cluster.example"]);
  expect(cb.dbPasswordFile).toBe(join(stateB, "db-password"));
  expect(readFileSync(cb.dbPasswordFile!, "utf8").trim()).toBe(pg.password);
  expect(cb.peers).toEqual(["https://127.0.0.1"]); // the first server's URL

  expect(readFileSync(b.serverCert, "utf8")).not.toBe(readFileSync(a.serverCert, "utf8"));
  const cert = new x509.X509Certificate(readFileSync(b.serverCert, "utf8"));
  expect(await cert.verify({ publicKey: new x509.X509Certificate(readFileSync(a.siteCaCert, "utf8")), signatureOnly: true })).toBe(true);
  expect(hostsNotInServerCert(stateB, ["127.0.0.2"])).toEqual([]);

  for (const f of [b.siteCaKey, b.nodeCaKey, b.sshCaKey, b.serverKey, join(stateB, "keys/image.key"), join(stateB, `image-keys/${digest}.key`), b.config, cb.dbPasswordFile!]) {
    expect([f, mode(f)]).toEqual([f, 0o600]);
  }
  for (const d of [stateB, b.keys, join(stateB, "image-keys")]) expect([d, mode(d)]).toEqual([d, 0o700]);
});

test("a second join into the same state dir is refused and changes nothing; a bundle that is not one is named", async () => {
  const before = readFileSync(statePaths(stateB).config, "utf8");
  const r = await cli(["serve", "init", "--state", stateB, "--join", bundle, "--address", "127.0.0.3"]);
  expect(r.code).toBe(1);
  expect(r.err).toContain(`${stateB} already exists and is not empty`);
  expect(readFileSync(statePaths(stateB).config, "utf8")).toBe(before);

  const junk = join(dir, "junk.json");
  writeFileSync(junk, "{\"format\":\"something else\"}\n");
  const j = await cli(["serve", "init", "--state", join(dir, "never"), "--join", junk]);
  expect(j.code).toBe(1);
  expect(j.err).toContain(`${junk} is not an airroot site bundle`);
  expect(j.err).toContain("airroot serve export");
});

test("joining straight from a state dir copied over works the same", async () => {
  const c = join(dir, "c");
  await mustCli(["serve", "init", "--state", c, "--join", stateA, "--address", "127.0.0.3"]);
  expect(readConfig(c).serverId).not.toBe(readConfig(stateA).serverId);
  expect(readFileSync(statePaths(c).siteCaKey, "utf8")).toBe(readFileSync(statePaths(stateA).siteCaKey, "utf8"));
  expect(hostsNotInServerCert(c, ["127.0.0.3"])).toEqual([]);
  // A copy whose config names the password file at the original host's path, the file itself copied along inside.
  const moved = join(dir, "moved");
  cpSync(stateA, moved, { recursive: true });
  writeFileSync(join(moved, "db-password"), pg.password + "\n", { mode: 0o600 });
  const cfg = JSON.parse(readFileSync(statePaths(moved).config, "utf8"));
  writeFileSync(statePaths(moved).config, JSON.stringify({ ...cfg, dbPasswordFile: "/var/lib/airroot-gone/db-password" }));
  const d = join(dir, "d");
  await mustCli(["serve", "init", "--state", d, "--join", moved, "--address", "127.0.0.4"]);
  expect(readFileSync(join(d, "db-password"), "utf8")).toBe(pg.password + "\n");
});

test("a node enrolled through the first server is served by the joined one; serve status shows both up", async () => {
  const [srvA, srvB] = [await start(stateA), await start(stateB)];
  await mustCli(["node", "arm", "n1", "--state", stateB]); // the joined state reaches the same records
  const siteCa = readFileSync(statePaths(stateA).siteCaCert, "utf8");
  const cred = await enrollNode(srvA.url, siteCa, { macs: [MAC] });
  const api = new NodeApi(srvB.url, siteCa, cred); // TLS to the joined server's own certificate, same site CA
  try { expect((await api.config()).name).toBe("n1"); } finally { await api.close(); }

  const rows = await status(stateA);
  const ids = [readConfig(stateA).serverId, readConfig(stateB).serverId];
  expect(rows.map((r) => r.id).sort()).toEqual([...ids].sort());
  for (const r of rows) expect(r.state).toBe("up");
  expect(rows.find((r) => r.id === ids[0])!).toMatchObject({ self: true, pid: srvA.proc.pid, urls: ["https://127.0.0.1"] });
  expect(rows.find((r) => r.id === ids[1])!).toMatchObject({ self: false, pid: srvB.proc.pid, urls: ["https://127.0.0.2"] });
  const text = await mustCli(["serve", "status", "--state", stateB]);
  expect(text).toMatch(/^SERVER\s+HOST\s+STATE\s+LAST SEEN\s+STARTED\s+VERSION\s+URLS$/m);
  expect(text).toMatch(new RegExp(`^${ids[1]} \\*\\s+\\S+\\[${srvB.proc.pid}\\]\\s+up\\s`, "m"));
}, 120_000);

test("a state dir copied whole (one serverId, two servers): the heartbeat says so in the log", async () => {
  const copy = join(dir, "copied");
  cpSync(stateA, copy, { recursive: true });
  const n = servers.length;
  const dup = await start(copy);
  // The original's, the joined one's and the copy's stderr: either of the two with one id may notice first.
  const logs = () => [0, 1, n].map((i) => { try { return readFileSync(join(dir, `serve-${i}.log.err`), "utf8"); } catch { return ""; } }).join("");
  for (let i = 0; i < 50 && !/is also in use by/.test(logs()); i++) await Bun.sleep(100);
  expect(logs()).toContain(`server id ${readConfig(stateA).serverId} is also in use by`);
  expect(logs()).toContain("airroot serve init --join");
  await stopProcess(dup.proc);
  servers.splice(n, 1);
}, 60_000);

test("serve status: a killed server turns stale once it misses three heartbeats; a cleanly stopped one shows stopped", async () => {
  const [srvA, srvB] = servers;
  const [idA, idB] = [readConfig(stateA).serverId, readConfig(stateB).serverId];
  const seenBefore = (await status(stateA)).find((r) => r.id === idA)!.seen;
  srvB.proc.kill("SIGKILL");
  await srvB.proc.exited;
  await Bun.sleep(1500);
  let rows = await status(stateA);
  expect(rows.find((r) => r.id === idB)!.state).toBe("stale");
  expect(rows.find((r) => r.id === idA)!).toMatchObject({ state: "up" });
  expect(rows.find((r) => r.id === idA)!.seen).toBeGreaterThan(seenBefore); // still beating
  expect(await mustCli(["serve", "status", "--state", stateA])).toMatch(new RegExp(`^${idB}\\s+\\S+\\s+stale\\s`, "m"));

  await stopProcess(srvA.proc);
  rows = await status(stateB);
  expect(rows.find((r) => r.id === idA)!.state).toBe("stopped");
  expect(await mustCli(["serve", "status", "--state", stateB, "--forget", idB])).toContain(`forgot server ${idB}`);
  expect((await status(stateB)).map((r) => r.id)).toEqual([idA]);
}, 60_000);

test("serve status on SQLite: the one server of the state dir", async () => {
  const s = join(dir, "single");
  await mustCli(["serve", "init", "--state", s, "--address", "127.0.0.1"]);
  expect(await mustCli(["serve", "status", "--state", s])).toContain("no server has recorded itself");
  const srv = await start(s);
  const rows = await status(s);
  expect(rows).toHaveLength(1);
  expect(rows[0]).toMatchObject({ id: readConfig(s).serverId, state: "up", self: true, pid: srv.proc.pid });
}, 60_000);
