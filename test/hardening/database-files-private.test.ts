// airroot.db and its -wal and -shm files are 0600 whatever the umask, and an older state dir's 0644 files are made
// 0600 when airroot next opens the database. Found in review: they were created with the umask (0644), protected only
// by the 0700 state directory, which an admin may open up (the mirror setup copies images/ out of it).
// Real components: the airroot binary (serve init, node add/list, serve) under umask 022, and SQLite.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { chmodSync, existsSync, statSync } from "node:fs";
import { Database } from "bun:sqlite";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { freePort, waitForPort } from "../helpers/ports";
import { privateAirroot } from "../helpers/boot";

const FILES = ["airroot.db", "airroot.db-wal", "airroot.db-shm"];
let bin = "";
afterAll(removeScratchDirs);
beforeAll(() => { bin = privateAirroot(); }, 180_000);

/** Runs the airroot binary under umask 022 (a common default), as an admin would. */
async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn(["sh", "-c", 'umask 022 && exec "$@"', "sh", bin, ...args], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

const modes = (state: string) => Object.fromEntries(FILES.map((f) => [f, existsSync(join(state, f)) ? (statSync(join(state, f)).mode & 0o777).toString(8) : "missing"]));
const ALL_PRIVATE = Object.fromEntries(FILES.map((f) => [f, "600"]));

test("a new state dir under umask 022: airroot.db, -wal and -shm are 0600 while airroot serve has them open", async () => {
  const state = join(scratchDir(), "state");
  expect((await run(["serve", "init", "--state", state, "--address", "127.0.0.1"])).code).toBe(0);
  const port = await freePort("127.0.0.1");
  // airroot serve is the first to open the database: it creates it.
  const srv = Bun.spawn(["sh", "-c", 'umask 022 && exec "$@"', "sh", bin, "serve", "--state", state, "--listen", `127.0.0.1:${port}`, "--no-discovery"],
    { stdout: "ignore", stderr: "ignore" });
  try {
    await waitForPort("127.0.0.1", port, 30_000);
    expect((await run(["node", "add", "n1", "--state", state, "--mac", "52:54:00:00:13:61", "--profile", "p"])).code).toBe(0);
    expect(modes(state)).toEqual(ALL_PRIVATE);
  } finally { srv.kill("SIGTERM"); await srv.exited; }
  for (const f of FILES) if (existsSync(join(state, f))) expect(statSync(join(state, f)).mode & 0o077).toBe(0);
}, 60_000);

test("an older state dir with 0644 database files is fixed when airroot opens it", async () => {
  const state = join(scratchDir(), "state");
  expect((await run(["serve", "init", "--state", state, "--address", "127.0.0.1"])).code).toBe(0);
  // What older versions left: the files made with the umask. A connection held open keeps -wal and -shm in place.
  const old = new Database(join(state, "airroot.db"), { create: true });
  try {
    old.exec("PRAGMA journal_mode = WAL; CREATE TABLE IF NOT EXISTS t (x); INSERT INTO t VALUES (1);");
    for (const f of FILES) chmodSync(join(state, f), 0o644);
    expect(modes(state)).toEqual(Object.fromEntries(FILES.map((f) => [f, "644"])));
    const list = await run(["node", "list", "--state", state]);
    expect(list.code).toBe(0);
    expect(modes(state)).toEqual(ALL_PRIVATE);
  } finally { old.close(); }
}, 60_000);
