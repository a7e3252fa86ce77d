// `airroot status --prometheus` of a real mount (the built binary over two nginx on loopback and one dead URL):
// promtool accepts the text, the counters match what was read, per-source states and errors, the mount point's
// quote and backslash escaped in labels, the holder's restart count after a kill -9, and the textfile-collector
// recipe (write to a temporary name, then mv) gives a file promtool accepts.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { makeTestPki, type TestPki } from "../helpers/pki";
import { startNginx, type Nginx } from "../helpers/nginx";
import { freePort } from "../helpers/ports";
import { promtool, sampleValue } from "../helpers/promtool";

const airroot = join(import.meta.dir, "..", "..", "dist", "airroot");
const dir = scratchDir("airroot-statusprom-");
const SIZE = 6 * 1048576;
const servers: Nginx[] = [];
let pki: TestPki, urls: string[], dead: string, mnt: string, data: Buffer;

function sh(cmd: string[], timeout = 60_000) {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe", timeout });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}
/** /proc/self/mounts writes space, tab, newline and backslash in octal (\040 ...). */
const isMounted = (mp: string) => readFileSync("/proc/self/mounts", "utf8").split("\n")
  .some((l) => l.split(" ")[1]?.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8))) === mp);
/** A label value as the format writes it (the mount point has a quote and a backslash). */
const esc = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"');

beforeAll(async () => {
  if (!existsSync(airroot)) throw new Error(`${airroot} is missing: run \`make\` (make test builds it first)`);
  mkdirSync(join(dir, "www"));
  data = randomBytes(SIZE);
  writeFileSync(join(dir, "www", "img.bin"), data);
  pki = makeTestPki(join(dir, "pki"));
  for (const host of ["127.0.0.2", "::1"]) {
    const port = await freePort(host);
    servers.push(await startNginx({ root: join(dir, "www"), listen: [{ host, port }], cert: pki.serverCert, key: pki.serverKey, workDir: join(dir, `ng${servers.length}`) }));
  }
  urls = servers.map((s) => s.urlFor("img.bin"));
  dead = `https://127.0.0.3:${await freePort("127.0.0.3")}/img.bin`; // nothing listens there
  mnt = join(dir, 'mnt "q"\\x');
  mkdirSync(mnt);
  const m = sh([airroot, "mount", "--ca", pki.caCert, ...urls, dead, mnt]);
  if (m.code !== 0) throw new Error(`airroot mount failed: ${m.err}`);
}, 120_000);

afterAll(async () => {
  if (mnt && isMounted(mnt)) sh(["umount", "-l", mnt]);
  for (const s of servers) await s.stop().catch(() => {});
  removeScratchDirs();
}, 60_000);

test("the metrics of a mount: promtool accepts them, bytes and cache match the reads, every source's state", () => {
  const sum = createHash("sha256").update(readFileSync(join(mnt, "img.bin"))).digest("hex");
  expect(sum).toBe(createHash("sha256").update(data).digest("hex"));
  const r = sh([airroot, "status", mnt, "--prometheus"]);
  expect(r.err).toBe("");
  expect(r.code).toBe(0);
  expect(promtool(r.out)).toEqual({ code: 0, out: "" });
  const mp = `mountpoint="${esc(mnt)}"`;
  const v = (name: string, labels = mp) => sampleValue(r.out, `airroot_mount_${name}{${labels}}`);
  expect(v("up")).toBe(1);
  expect(v("image_size_bytes")).toBe(SIZE);
  expect(v("fetched_bytes_total")).toBeGreaterThanOrEqual(SIZE);
  expect(v("cache_misses_total")).toBeGreaterThan(0);
  expect(v("reads_total")).toBeGreaterThan(0);
  expect(v("cache_bytes")).toBeGreaterThanOrEqual(0);
  expect(v("holder_daemon_restarts_total")).toBe(0);
  const bytes = urls.map((u) => v("source_bytes_total", `${mp},url="${u}"`)!);
  expect(bytes[0] + bytes[1]).toBe(v("fetched_bytes_total")!);
  for (const u of urls) {
    expect(v("source_state", `${mp},url="${u}",state="healthy"`)).toBe(1);
    expect(v("source_state", `${mp},url="${u}",state="down"`)).toBe(0);
    expect(v("source_rtt_seconds", `${mp},url="${u}"`)).toBeGreaterThan(0);
  }
  expect(v("source_state", `${mp},url="${dead}",state="down"`)).toBe(1);
  expect(v("source_state", `${mp},url="${dead}",state="healthy"`)).toBe(0);
  expect(v("source_errors_total", `${mp},url="${dead}"`)).toBeGreaterThanOrEqual(1);
  expect(r.out).toMatch(new RegExp(`^airroot_mount_info\\{${mp.replace(/[\\^$.*+?()[\]{}|]/g, "\\$&")},image="img\\.bin",validator="\\\\"`, "m"));

  // Without a mount point: every daemon here, ours among them.
  const all = sh([airroot, "status", "--prometheus"]);
  expect(all.code).toBe(0);
  expect(promtool(all.out)).toEqual({ code: 0, out: "" });
  expect(all.out).toContain(`airroot_mount_up{${mp}} 1\n`);
  // A mount point no daemon serves: an error, and nothing on stdout for a textfile to take.
  const none = sh([airroot, "status", join(dir, "nothing-here"), "--prometheus"]);
  expect(none.code).toBe(1);
  expect(none.out).toBe("");
  expect(none.err).toContain("no airroot mount daemon serves");
  expect(sh([airroot, "status", "--help"]).out).toContain("--prometheus");
}, 60_000);

test("after a kill -9 the holder's restart shows; the textfile-collector recipe writes a file promtool accepts", async () => {
  const before = JSON.parse(sh([airroot, "status", "--json", mnt]).out) as { pid: number };
  process.kill(before.pid, "SIGKILL");
  let pid = before.pid;
  for (const deadline = Date.now() + 15_000; Date.now() < deadline && (pid === before.pid || !pid); await Bun.sleep(100)) {
    const s = sh([airroot, "status", "--json", mnt]);
    pid = s.code === 0 ? (JSON.parse(s.out) as { pid?: number }).pid ?? 0 : 0;
  }
  expect(pid).not.toBe(before.pid);
  const textdir = join(dir, "textfile");
  mkdirSync(textdir);
  // As in the README: write under a temporary name and rename, so node_exporter never reads half a file.
  const recipe = sh(["sh", "-c", `"$0" status "$1" --prometheus > "$2/airroot.prom.$$" && mv "$2/airroot.prom.$$" "$2/airroot.prom"`, airroot, mnt, textdir]);
  expect(recipe.err).toBe("");
  expect(recipe.code).toBe(0);
  const text = readFileSync(join(textdir, "airroot.prom"), "utf8");
  expect(promtool(text)).toEqual({ code: 0, out: "" });
  expect(sampleValue(text, `airroot_mount_holder_daemon_restarts_total{mountpoint="${esc(mnt)}"}`)).toBe(1);
  expect(sampleValue(text, `airroot_mount_up{mountpoint="${esc(mnt)}"}`)).toBe(1);
  // The new daemon serves the same bytes.
  expect(readFileSync(join(mnt, "img.bin")).equals(data)).toBe(true);
}, 60_000);
