// A node's status text never reaches the admin's terminal with control characters: `airroot node show` and
// `node list` (and their --json) print no C0/C1 controls (U+009B is a CSI many terminals obey), no bidi embeddings,
// overrides or isolates (U+202A–U+202E, U+2066–U+2069) and no other format characters. Found in review: only C0 and
// DEL were replaced when stored, and nothing was escaped at display.
// The server cleans them when a node reports (stored as spaces); text already in a database (stored by an older
// server) is escaped visibly at display. Real components: the airroot binary (serve, enroll, node) and curl.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { Database } from "bun:sqlite";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { startServeProcess, type ServeProcess } from "../helpers/serve-process";
import { privateAirroot } from "../helpers/boot";
import { statePaths } from "../../src/server/state.ts";
import { credentialPaths } from "../../src/client/credential.ts";

const MAC = "52:54:00:00:13:41";
// What a hostile node reports: clear the screen and recolour (C1 CSI), reverse text (RLO), isolates, zero width,
// NEL, line separator, an ESC sequence, a BOM and a Unicode tag character.
const HOSTILE = "root: \u009b2J\u009b32mall good\u202egnp.exe\u202c \u2066x\u2069 \u200b\u0085\u2028\x1b[2J\ufeff\u{e0041} end";
// Anything a terminal could act on, outside the newlines and spaces of normal output.
const RAW = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\u{e0000}-\u{e007f}]/u;
let dir = "", state = "", url = "", bin = "", srv: ServeProcess | undefined;

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn([bin, ...args], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

/** The four views of the node an admin has; each must be free of raw control characters. */
async function views(): Promise<{ show: string; list: string; showJson: string; listJson: string }> {
  const r = await Promise.all([["node", "show", "n1"], ["node", "list"], ["node", "show", "n1", "--json"], ["node", "list", "--json"]]
    .map((a) => run([...a, "--state", state])));
  for (const v of r) expect(v.code).toBe(0);
  return { show: r[0].out, list: r[1].out, showJson: r[2].out, listJson: r[3].out };
}

beforeAll(async () => {
  bin = privateAirroot();
  dir = scratchDir();
  state = join(dir, "state");
  expect((await run(["serve", "init", "--state", state, "--address", "127.0.0.1"])).code).toBe(0);
  expect((await run(["node", "add", "n1", "--state", state, "--mac", MAC, "--profile", "p"])).code).toBe(0);
  expect((await run(["node", "arm", "n1", "--state", state, "--once"])).code).toBe(0);
  srv = await startServeProcess([bin], state);
  url = srv.url;
  const e = await run(["enroll", "--server", url, "--ca", statePaths(state).siteCaCert, "--out", join(dir, "cred"), "--mac", MAC]);
  expect(e.code).toBe(0);
}, 180_000);

afterAll(async () => { await srv?.stop(); removeScratchDirs(); }, 60_000);

test("a reported status with C1, bidi and format characters is stored clean and shown without them", async () => {
  const c = credentialPaths(join(dir, "cred"));
  const p = Bun.spawn(["curl", "-sS", "-m", "15", "--fail-with-body", "--cacert", statePaths(state).siteCaCert, "--cert", c.cert, "--key", c.key,
    "-H", "content-type: application/json", "--data-binary", JSON.stringify({ stage: "failed", detail: HOSTILE }), `${url}/api/v1/self/status`],
    { stdout: "pipe", stderr: "pipe" });
  expect(await p.exited).toBe(0);
  const v = await views();
  for (const [name, text] of Object.entries(v)) expect(`${name}: ${RAW.test(text) ? "raw control characters" : "clean"}`).toBe(`${name}: clean`);
  expect(v.show).toMatch(/stage: +failed: root \(.*\): root: +2J +32mall good gnp\.exe +x +\[2J +end/);
  expect(v.list).toMatch(/n1 .* failed: root \(/);
  const stored = JSON.parse(v.showJson).stageDetail as string;
  expect(stored).toBe(HOSTILE.replace(/[^\x20-\x7e]/gu, " "));
}, 60_000);

test("control characters already in the database are escaped visibly at display, and --json keeps the value", async () => {
  const db = new Database(statePaths(state).db);
  try { db.query("UPDATE nodes SET stage_detail = ? WHERE name = 'n1'").run(HOSTILE); } finally { db.close(); }
  const v = await views();
  for (const [name, text] of Object.entries(v)) expect(`${name}: ${RAW.test(text) ? "raw control characters" : "clean"}`).toBe(`${name}: clean`);
  expect(v.show).toContain("root: \\x9b2J\\x9b32mall good\\u202egnp.exe\\u202c \\u2066x\\u2069 \\u200b\\x85\\u2028\\x1b[2J\\ufeff\\u{e0041} end");
  // The JSON views are still exact: a program reading them gets the stored text back.
  expect(JSON.parse(v.showJson).stageDetail).toBe(HOSTILE);
  expect(JSON.parse(v.listJson)[0].stageDetail).toBe(HOSTILE);
}, 60_000);
