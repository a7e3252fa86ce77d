// The fixture the mirror and mount tests share: a world-traversable scratch dir (web servers run as www-data), a test
// PKI whose server key those servers can read, a server state dir, and one image packed into it from a generated
// tree of `bytes` bytes.
import { join } from "node:path";
import { chmodSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { scratchDir } from "./tmp";
import { makeTestPki, type TestPki } from "./pki";
import { makeTree } from "../image/tree";
import { openDatabase } from "../../src/server/store/db";
import { packImage, type PackResult } from "../../src/image/pack";

export interface PackedImage { base: string; pki: TestPki; state: string; tree: string; packed: PackResult }

export async function packedImage(bytes: number): Promise<PackedImage> {
  const base = scratchDir();
  chmodSync(base, 0o755);
  const pki = makeTestPki(join(base, "pki"));
  chmodSync(pki.serverKey, 0o644);
  const state = join(base, "state");
  mkdirSync(state, { mode: 0o755 });
  const tree = makeTree(join(base, "root"), "", bytes);
  const db = await openDatabase(state);
  try {
    return { base, pki, state, tree, packed: await packImage({ rootDir: tree, profile: "compute", stateDir: state, db }) };
  } finally { await db.close(); }
}

/**
 * Runs a command with its output in files under dir, not pipes: `airroot mount` leaves a detached daemon holding its
 * stderr, so a pipe would never reach end-of-file. Async, so an in-process server keeps answering meanwhile.
 */
export async function runToFiles(dir: string, cmd: string[], timeoutMs = 60_000) {
  const out = join(dir, `out-${Math.random().toString(36).slice(2)}`), err = `${out}.err`;
  const p = Bun.spawn(cmd, { stdout: Bun.file(out), stderr: Bun.file(err), timeout: timeoutMs });
  await p.exited;
  const read = (f: string) => (existsSync(f) ? readFileSync(f, "utf8") : "");
  return { code: p.exitCode, out: read(out), err: read(err) };
}
