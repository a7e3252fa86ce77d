// airroot serve serves only regular files under images/: a symlink named like an image (here one pointing at the
// node CA's private key, as found in review) gets 404 and an audit line, not the key; `image verify` flags it.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { initState, statePaths } from "../../src/server/state";
import { serve, type RunningServer } from "../../src/server/serve";
import { privateAirroot } from "../helpers/boot";

let state = "", srv: RunningServer, url = "";
const LINKED = "a".repeat(64) + ".sfs", DIR_NAMED = "b".repeat(64) + ".sfs", REAL = "c".repeat(64) + ".manifest";
const audit: string[] = [];

beforeAll(async () => {
  state = join(scratchDir(), "state");
  await initState(state, { addresses: ["127.0.0.1"] });
  const p = statePaths(state);
  symlinkSync(p.nodeCaKey, join(p.images, LINKED));
  mkdirSync(join(p.images, DIR_NAMED));
  writeFileSync(join(p.images, REAL), "a regular file\n");
  srv = await serve({ stateDir: state, listen: ["127.0.0.1:0"], discovery: false,
    audit: { record: (e: Record<string, unknown>) => { audit.push(JSON.stringify(e)); } } as never });
  url = srv.localUrls[0];
}, 60_000);
afterAll(async () => { await srv?.close(); removeScratchDirs(); });

async function get(name: string): Promise<{ status: number; body: string }> {
  // Async: the server runs in this process, a synchronous spawn would block it.
  const r = Bun.spawn(["curl", "-sS", "-m", "10", "--cacert", statePaths(state).siteCaCert, "-w", "\n%{http_code}", `${url}/images/${name}`], { stdout: "pipe" });
  const out = await new Response(r.stdout).text(), i = out.lastIndexOf("\n");
  return { status: Number(out.slice(i + 1)), body: out.slice(0, i) };
}

test("a symlink named like an image is not followed: 404, no key material, an audit line", async () => {
  const r = await get(LINKED);
  expect(r.status).toBe(404);
  expect(r.body).not.toContain("PRIVATE KEY");
  expect(audit.some((l) => l.includes(LINKED) && /symlink/.test(l))).toBe(true);
  expect((await get(DIR_NAMED)).status).toBe(404);
  const ok = await get(REAL);
  expect(ok.status).toBe(200);
  expect(ok.body).toBe("a regular file\n");
});

test("image verify flags the symlink and the directory as unsafe and exits non-zero", () => {
  const r = Bun.spawnSync([privateAirroot(), "image", "verify", "--state", state], { stdout: "pipe", stderr: "pipe" });
  const out = r.stdout.toString();
  expect(r.exitCode).not.toBe(0);
  expect(out).toMatch(new RegExp(`UNSAFE  ${LINKED}: a symbolic link`));
  expect(out).toMatch(new RegExp(`UNSAFE  ${DIR_NAMED}: a directory`));
  expect(out).toMatch(/2 unsafe entries/);
  expect(readFileSync(statePaths(state).nodeCaKey, "utf8")).toContain("PRIVATE KEY"); // untouched
}, 120_000);
