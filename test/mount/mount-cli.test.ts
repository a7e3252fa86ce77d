// The whole `airroot mount` chain through the built binary: three real nginx servers on loopback, the FUSE mount,
// a real squashfs loop-mounted on top, status, wrong CA, argv0, SIGTERM.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { existsSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { makeTestPki, type TestPki } from "../helpers/pki";
import { startNginx, type Nginx } from "../helpers/nginx";
import { freePort } from "../helpers/ports";

const airroot = join(import.meta.dir, "..", "..", "dist", "airroot");
const dir = scratchDir("airroot-mountcli-");
const servers: Nginx[] = [];
let pki: TestPki;
let urls: string[];
const mounts: string[] = []; // cleaned up in reverse order even when a test fails

function sh(cmd: string[], timeout = 60_000) {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe", timeout });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}
/** Resident MiB of a process's mappings of its own executable's code (r-xp), from /proc/PID/smaps. */
function residentCodeMiB(pid: number): number {
  const exe = readlinkSync(`/proc/${pid}/exe`);
  let inCode = false, kb = 0;
  for (const line of readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n")) {
    const head = /^[0-9a-f]+-[0-9a-f]+ (\S+) \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (head) inCode = head[1] === "r-xp" && head[2] === exe;
    else if (inCode && line.startsWith("Rss:")) kb += Number(/(\d+) kB/.exec(line)![1]);
  }
  return kb / 1024;
}
const isMounted = (mp: string) => readFileSync("/proc/self/mounts", "utf8").split("\n").some((l) => l.split(" ")[1] === mp);

beforeAll(async () => {
  if (!existsSync(airroot)) throw new Error(`${airroot} is missing: run \`make\` (make test builds it first)`);
  const tree = join(dir, "tree");
  mkdirSync(join(tree, "etc"), { recursive: true });
  writeFileSync(join(tree, "etc", "hostname"), "demo\n");
  writeFileSync(join(tree, "random.bin"), randomBytes(24 * 1048576));
  sh(["cp", "-a", "/usr/share/doc", join(tree, "doc")]);
  mkdirSync(join(dir, "www"));
  const mk = sh(["mksquashfs", tree, join(dir, "www", "root.sfs"), "-comp", "zstd", "-quiet", "-no-progress"]);
  if (mk.code !== 0) throw new Error(`mksquashfs failed: ${mk.err}`);
  pki = makeTestPki(join(dir, "pki"));
  for (const host of ["127.0.0.2", "127.0.0.3", "::1"]) {
    const port = await freePort(host);
    servers.push(await startNginx({ root: join(dir, "www"), listen: [{ host, port }], cert: pki.serverCert, key: pki.serverKey, workDir: join(dir, `ng${servers.length}`) }));
  }
  urls = servers.map((s) => s.urlFor("root.sfs"));
}, 120_000);

afterAll(async () => {
  for (const mp of mounts.reverse()) if (isMounted(mp)) sh(["umount", "-l", mp]);
  for (const s of servers) await s.stop().catch(() => {});
  removeScratchDirs();
}, 60_000);

describe("airroot mount (built binary)", () => {
  test("mounts, serves a squashfs that diffs clean, reports status, and SIGTERM unmounts", async () => {
    const mnt = join(dir, "m1"), root = join(dir, "r1");
    mkdirSync(mnt); mkdirSync(root);
    const m = sh([airroot, "mount", "--ca", pki.caCert, "--argv0", "@airroot-test", ...urls, mnt]);
    expect(m.err).toContain("Successfully connected to");
    expect(m.code).toBe(0);
    mounts.push(mnt);
    expect(isMounted(mnt)).toBe(true);
    expect(sh(["mount", "-o", "loop,ro", join(mnt, "root.sfs"), root]).code).toBe(0);
    mounts.push(root);
    const diff = sh(["diff", "-r", "--no-dereference", join(dir, "tree"), root], 120_000);
    expect(diff.out + diff.err).toBe("");
    expect(diff.code).toBe(0);

    const st = JSON.parse(sh([airroot, "status", "--json", mnt]).out);
    expect(st.image.name).toBe("root.sfs");
    expect(st.image.sources.map((s: { url: string }) => s.url).sort()).toEqual([...urls].sort());
    expect(st.image.bytesFetched).toBeGreaterThan(0);
    expect(st.memory.vmRssMiB).toBeGreaterThan(st.memory.rssAnonMiB);
    expect(st.memory.rssAnonMiB).toBeGreaterThan(0);
    expect(st.memory.cacheMiB).toBeGreaterThanOrEqual(0);
    // The block budget: the default 8 MiB cache plus one 1 MiB request (one more if a fetch had to go over it).
    expect(st.memory.blocksMiB).toBeGreaterThanOrEqual(0);
    expect(st.memory.blocksMiB).toBeLessThanOrEqual(10);
    const human = sh([airroot, "status", mnt]).out;
    expect(human).toContain("root.sfs");
    // Without a mount point: every running daemon's status (what a booted node's admin types).
    const every = JSON.parse(sh([airroot, "status", "--json"]).out) as { pid: number }[];
    expect(every.some((d) => d.pid === st.pid)).toBe(true);
    expect(sh([airroot, "status"]).out).toContain("root.sfs");
    expect(human).toMatch(/^memory: VmRSS \d+\.\d MiB, private \d+\.\d MiB \(of which image blocks \d+\.\d MiB, in the cache \d+\.\d MiB\)$/m);
    expect(readFileSync(`/proc/${st.pid}/cmdline`, "utf8").split("\0")[0]).toBe("@airroot-test");
    // Once reads stop the daemon unmaps its executable's code pages (src/sys/codepages.ts): start-up alone leaves
    // ~31 MiB of them resident; afterwards what a status query or the next read runs comes back (~8 MiB here).
    await Bun.sleep(2500); // past the 1 s idle mark and the next check of it
    expect(residentCodeMiB(st.pid)).toBeLessThan(20);

    expect(sh(["umount", root]).code).toBe(0);
    process.kill(st.pid, "SIGTERM");
    for (let i = 0; i < 100 && (isMounted(mnt) || existsSync(`/proc/${st.pid}`)); i++) await Bun.sleep(100);
    expect(isMounted(mnt)).toBe(false);
    expect(existsSync(`/proc/${st.pid}`)).toBe(false);
  }, 120_000); // diff -r of the whole tree: ~4.5 s alone, more on a busy machine (bun test's default is 5 s)

  test("a wrong CA is refused at mount time and nothing is mounted", () => {
    const other = makeTestPki(join(dir, "other-pki"), undefined, "Some Other CA");
    const mnt = join(dir, "m2");
    mkdirSync(mnt);
    const m = sh([airroot, "mount", "--ca", other.caCert, ...urls, mnt]);
    expect(m.code).not.toBe(0);
    expect(m.err).toMatch(/cannot reach any image server/i);
    expect(m.err).toMatch(/certificate/i);
    expect(isMounted(mnt)).toBe(false);
  });

  test("bad arguments give a clear error and --help works", () => {
    const r = sh([airroot, "mount", "http://127.0.0.2/x.sfs", dir]);
    expect(r.code).toBe(1);
    expect(r.err).toContain("airroot mount: \"http://127.0.0.2/x.sfs\" is not an https:// URL");
    const h = sh([airroot, "mount", "--help"]);
    expect(h.code).toBe(0);
    expect(h.out).toContain("--stall-timeout");
  });
});
