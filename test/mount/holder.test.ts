// The FUSE connection outlives its daemon (issue 15 §2), through the built binary against the real kernel: two nginx
// on loopback, a detached `airroot mount` (holder + daemon), a sha256sum of the image through the mount while the
// daemon is killed with SIGKILL 20 times, or handed over to another binary (--takeover), and the same without
// FUSE_NOTIFY_RESEND (forced off: how a kernel before 6.9 behaves).
//
// Size: 1 GiB, as the issue asks. The read is rate-limited (nginx limit_rate, ~24 MiB/s in all) so that it lasts
// through the 20 kills (checked: the sum is still running at the last one) and the test stays under a minute on this
// shared 2-core machine; every kill lands with reads in flight (checked: the new daemons answer re-queued requests).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, readSync, readlinkSync } from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import type { Subprocess } from "bun";
import { connect } from "node:net";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { makeTestPki, type TestPki } from "../helpers/pki";
import { startNginx, type Nginx } from "../helpers/nginx";
import { freePort } from "../helpers/ports";
import { fetchStatus, statusLogPath, type DaemonStatus } from "../../src/mount/status";
import { requestTakeover } from "../../src/mount/takeover";

const airroot = join(import.meta.dir, "..", "..", "dist", "airroot");
const dir = scratchDir("airroot-holder-");
const IMAGE_MIB = 1024;
const servers: Nginx[] = [];
let pki: TestPki;
let urls: string[];
let want: string;
const mounts: string[] = [];
const pids = new Set<number>();      // holders and daemons seen: all killed at the end
const readers: Subprocess[] = [];

const isMounted = (mp: string) => readFileSync("/proc/self/mounts", "utf8").split("\n").some((l) => l.split(" ")[1] === mp);
const alive = (pid: number) => existsSync(`/proc/${pid}`) && !/^\d+ \(.*\) Z/.test(safeRead(`/proc/${pid}/stat`));
function safeRead(p: string): string { try { return readFileSync(p, "utf8"); } catch { return ""; } }

function sh(cmd: string[], env: Record<string, string> = {}, timeout = 60_000) {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe", timeout, env: { ...process.env, ...env } });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

/** Mounts the image with the built binary (detached: holder + daemon); returns the mount point and first status. */
async function mount(name: string, env: Record<string, string> = {}): Promise<{ mp: string; st: DaemonStatus }> {
  const mp = join(dir, name);
  mkdirSync(mp);
  const m = sh([airroot, "mount", "--ca", pki.caCert, "--argv0", "@airroot-test", ...urls, mp], env);
  if (m.code !== 0) throw new Error(`airroot mount failed: ${m.err}`);
  mounts.push(mp);
  const st = await statusOf(mp);
  pids.add(st.holder!.pid);
  pids.add(st.pid);
  return { mp, st };
}

/** The status of the daemon serving `mp`, waiting (bounded) for one other than `notPid` to answer. */
async function statusOf(mp: string, notPid?: number, timeoutMs = 30_000): Promise<DaemonStatus> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    try {
      const st = await fetchStatus(mp);
      if (st.pid !== notPid) { pids.add(st.pid); return st; }
    } catch (e) { last = (e as Error).message; }
    await Bun.sleep(25);
  }
  throw new Error(`no new daemon answered for ${mp} within ${timeoutMs} ms (${last})`);
}

/** sha256sum of the image through the mount, in its own process (async: never blocks this one). */
function startSum(mp: string, firstMiB?: number): { done: Promise<{ code: number; out: string; err: string }> } {
  const file = join(mp, "image.bin");
  const p = Bun.spawn(firstMiB ? ["bash", "-c", `set -o pipefail; head -c ${firstMiB}M "$0" | sha256sum`, file] : ["sha256sum", file],
                      { stdout: "pipe", stderr: "pipe" });
  readers.push(p);
  const timer = setTimeout(() => p.kill("SIGKILL"), 150_000);
  const done = (async () => {
    const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
    const code = await p.exited;
    clearTimeout(timer);
    return { code, out, err };
  })();
  return { done };
}
const logOf = (mp: string) => safeRead(statusLogPath(mp));
/** Resolves once nothing accepts connections on host:port any more (bounded). */
async function refused(host: string, port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const open = await new Promise<boolean>((r) => {
      const c = connect({ host, port });
      c.once("connect", () => { c.destroy(); r(true); });
      c.once("error", () => r(false));
    });
    if (!open) return;
    await Bun.sleep(50);
  }
  throw new Error(`${host}:${port} still accepts connections`);
}
/** `len` bytes of the served image at `off`, read from the file itself. */
function refSlice(off: number, len: number): Buffer {
  const fd = openSync(join(dir, "www", "image.bin"), "r");
  try {
    const b = Buffer.alloc(len);
    readSync(fd, b, 0, len, off);
    return b;
  } finally { closeSync(fd); }
}
/** Whether this process has capability `bit` (CapEff in /proc/self/status). */
function hasCap(bit: number): boolean {
  const hex = /CapEff:\s*([0-9a-f]+)/.exec(readFileSync("/proc/self/status", "utf8"))?.[1] ?? "0";
  return ((BigInt(`0x${hex}`) >> BigInt(bit)) & 1n) === 1n;
}

beforeAll(async () => {
  if (!existsSync(airroot)) throw new Error(`${airroot} is missing: run \`make\` (make test builds it first)`);
  mkdirSync(join(dir, "www"));
  const h = createHash("sha256");
  const fd = Bun.file(join(dir, "www", "image.bin")).writer();
  for (let i = 0; i < IMAGE_MIB / 16; i++) {
    const b = randomBytes(16 * 1048576);
    h.update(b);
    fd.write(b);
  }
  await fd.end();
  want = h.digest("hex");
  pki = makeTestPki(join(dir, "pki"));
  // 3 MiB/s per connection (8 per server, most requests on the first): the read lasts ~45 s, through 20 kills.
  for (const host of ["127.0.0.2", "127.0.0.3"]) {
    const port = await freePort(host);
    servers.push(await startNginx({ root: join(dir, "www"), listen: [{ host, port }], cert: pki.serverCert, key: pki.serverKey,
      workDir: join(dir, `ng${servers.length}`), extra: "limit_rate 3m;" }));
  }
  urls = servers.map((s) => s.urlFor("image.bin"));
}, 120_000);

afterAll(async () => {
  for (const r of readers) r.kill("SIGKILL");
  // The nginx servers first, by their own stop (workers included): the sweep below would SIGKILL a master (its
  // command line names the scratch dir) and leave its workers running.
  for (const s of servers) await s.stop().catch(() => {});
  // Holders first (a holder would restart its daemon), then daemons: with the last fd closed the kernel aborts the
  // connection, so nothing can hang on it; then the mounts go.
  // Every process whose command line names this run's scratch directory is one of ours (holders, daemons, readers).
  const ours = (): number[] => (Bun.spawnSync(["ps", "-eo", "pid=,args="]).stdout.toString().split("\n")
    .filter((l) => l.includes(dir)).map((l) => Number(l.trim().split(" ")[0])).filter((p) => p !== process.pid));
  const all = [...new Set([...pids, ...ours()])];
  for (const pid of all) if (readlinkOr(`/proc/${pid}/cmdline`).includes("holder")) try { process.kill(pid, "SIGKILL"); } catch {}
  for (const pid of [...all, ...ours()]) try { process.kill(pid, "SIGKILL"); } catch {}
  for (const mp of mounts.reverse()) if (isMounted(mp)) sh(["umount", "-l", mp]);
  removeScratchDirs();
}, 60_000);
function readlinkOr(p: string): string { return safeRead(p); }

/** Unmounts through the daemon and checks that holder and daemon are gone (bounded). */
async function unmountAndCheck(mp: string, st: DaemonStatus): Promise<void> {
  const u = sh([airroot, "umount", mp]);
  expect(u.err).toBe("");
  for (let i = 0; i < 300 && (alive(st.holder!.pid) || alive(st.pid)); i++) await Bun.sleep(50);
  expect(isMounted(mp)).toBe(false);
  expect(alive(st.pid)).toBe(false);
  expect(alive(st.holder!.pid)).toBe(false);
}

describe("the FUSE connection survives the daemon (built binary, real kernel)", () => {
  test(`kill -9 of the daemon 20 times during a sha256sum of a ${IMAGE_MIB} MiB image: right sum, no failed read`, async () => {
    const { mp, st } = await mount("crash");
    const h = st.holder!;
    expect(h.resend).toBe("supported");
    expect(h.restarts).toBe(0);
    // The holder: '@' name (systemd spares it), never picked by the OOM killer; the daemon keeps its own score.
    expect(readFileSync(`/proc/${h.pid}/cmdline`, "utf8").split("\0")[0]).toBe("@airroot-test-holder");
    // Lowering oom_score_adj needs CAP_SYS_RESOURCE (a node's init has it; a test container may not): then it says so.
    if (hasCap(24)) expect(readFileSync(`/proc/${h.pid}/oom_score_adj`, "utf8").trim()).toBe("-1000");
    else expect(logOf(mp)).toContain("could not set oom_score_adj to -1000");
    expect(readFileSync(`/proc/${st.pid}/oom_score_adj`, "utf8").trim()).toBe(readFileSync("/proc/self/oom_score_adj", "utf8").trim());
    expect(readFileSync(`/proc/${st.pid}/cmdline`, "utf8").split("\0")[0]).toBe("@airroot-test");
    const human = sh([airroot, "status", mp]).out;
    expect(human).toContain(`holder pid ${h.pid} (@airroot-test-holder): daemon restarts 0, takeovers 0, FUSE_NOTIFY_RESEND supported`);

    const t0 = performance.now();
    const sum = startSum(mp);
    let sumDone = false;
    void sum.done.then(() => (sumDone = true));
    let cur = st, resent = 0, restartMs = 0, withReadsInFlight = 0;
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    for (let k = 0; k < 20; k++) {
      await Bun.sleep(300 + rnd() * 900); // past the holder's 250 ms "healthy" mark: no restart backoff
      const before = await fetchStatus(mp).catch(() => cur);
      resent += Number(before.fuse.resentRequests ?? 0);
      if (before.image.readsInFlight > 0) withReadsInFlight++;
      expect(sumDone).toBe(false); // every kill lands during the read
      process.kill(cur.pid, "SIGKILL");
      const tk = performance.now();
      cur = await statusOf(mp, cur.pid);
      restartMs = Math.max(restartMs, performance.now() - tk);
      expect(cur.holder!.pid).toBe(h.pid);
    }
    const r = await sum.done;
    const elapsed = (performance.now() - t0) / 1000;
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out.split(" ")[0]).toBe(want);
    const last = await fetchStatus(mp);
    resent += Number(last.fuse.resentRequests ?? 0);
    const holderRss = /VmRSS:\s+(\d+) kB/.exec(safeRead(`/proc/${h.pid}/status`))?.[1];
    console.log(`holder VmRSS ${(Number(holderRss) / 1024).toFixed(1)} MiB; ` +
      `20 kills during ${elapsed.toFixed(1)} s of sha256sum: ${resent} re-queued requests answered, ` +
      `${withReadsInFlight} kills with engine reads in flight, slowest restart to status ${restartMs.toFixed(0)} ms`);
    // The kills hit reads in flight: the new daemons answered requests the kernel queued again.
    expect(resent).toBeGreaterThan(0);
    expect(last.holder!.restarts).toBe(20);
    expect(last.holder!.lastExit?.how).toBe("killed by SIGKILL");
    expect(last.holder!.daemonStart).toContain("were queued again (FUSE_NOTIFY_RESEND)");
    const log = logOf(mp);
    expect(log.match(/died \(killed by SIGKILL\)/g)?.length).toBe(20);
    // From each death to the next daemon serving (the holder's own measure): started at once, serving well within 5 s.
    const gaps = [...log.matchAll(/serves the connection (\d+) ms after the previous one died/g)].map((m) => Number(m[1]));
    expect(gaps.length).toBe(20);
    console.log(`death to serving again: median ${gaps.sort((a, b) => a - b)[10]} ms, max ${gaps[19]} ms`);
    expect(gaps[19]!).toBeLessThan(5000);
    expect(log).not.toMatch(/read of .* failed/);
    expect(log).not.toContain("cannot be recovered");
    await unmountAndCheck(mp, last);
  }, 180_000);

  test("--takeover during a sha256sum hands the mount to another binary: right sum, no failed read", async () => {
    const { mp, st } = await mount("takeover");
    const other = join(dir, "airroot-new");
    copyFileSync(airroot, other);
    sh(["chmod", "755", other]);
    // The first 384 MiB (~16 s at the servers' rate): long enough for two takeovers, shorter than the whole image.
    const sum = startSum(mp, 384);
    let cur = st;
    // The second new binary is one the holder cannot see at its path (as on a node, where the holder stays in the
    // initramfs and the new binary is in the booted OS): it lives on a tmpfs mounted in a private mount namespace.
    const hidden = join(dir, "hidden");
    mkdirSync(hidden);
    const cmds = [[other, "mount", "--takeover", mp],
      ["unshare", "-m", "--propagation", "private", "sh", "-c",
       `mount -t tmpfs none '${hidden}' && cp '${other}' '${hidden}/airroot-hidden' && exec '${hidden}/airroot-hidden' mount --takeover '${mp}'`]];
    for (let k = 0; k < 2; k++) {
      await Bun.sleep(1500);
      const t = Bun.spawn(cmds[k]!, { stdout: "pipe", stderr: "pipe" });
      const killer = setTimeout(() => t.kill("SIGKILL"), 120_000);
      const [out, err] = await Promise.all([new Response(t.stdout).text(), new Response(t.stderr).text()]);
      clearTimeout(killer);
      expect(err + out).toContain("took over from pid");
      expect(await t.exited).toBe(0);
      const next = await statusOf(mp, cur.pid);
      if (k === 0) expect(readlinkSync(`/proc/${next.pid}/exe`)).toBe(other);
      else expect(readlinkSync(`/proc/${next.pid}/exe`)).toEndWith("airroot-hidden");
      for (let i = 0; i < 100 && alive(cur.pid); i++) await Bun.sleep(50);
      expect(alive(cur.pid)).toBe(false);
      expect(next.holder!.takeovers).toBe(k + 1);
      expect(next.holder!.restarts).toBe(0);
      expect(next.holder!.daemonStart).toContain("takeover");
      cur = next;
    }
    const r = await sum.done;
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out.split(" ")[0]).toBe(createHash("sha256").update(refSlice(0, 384 * 1048576)).digest("hex"));
    const log = logOf(mp);
    expect(log.match(/drained and handed over/g)?.length).toBe(2);
    expect(log).toContain("(as /proc/");
    expect(log).not.toMatch(/read of .* failed|died \(/);
    // Later restarts use the hidden binary too (the holder keeps it open).
    process.kill(cur.pid, "SIGKILL");
    const again = await statusOf(mp, cur.pid);
    expect(readlinkSync(`/proc/${again.pid}/exe`)).toEndWith("airroot-hidden");
    await unmountAndCheck(mp, again);
  }, 180_000);

  test("without FUSE_NOTIFY_RESEND (forced off): takeover loses nothing; a crash is reported as unrecoverable", async () => {
    const { mp, st } = await mount("noresend", { AIRROOT_FUSE_NO_RESEND: "1" });
    expect(st.holder!.resend).toBe("forced off");
    expect(sh([airroot, "status", mp]).out).toContain("without FUSE_NOTIFY_RESEND, requests in flight when a daemon crashes cannot be recovered");
    // A takeover during a read (of the first 64 MiB here: the whole image is read in the tests above).
    const sum = startSum(mp, 64);
    await Bun.sleep(1500);
    const t = sh([airroot, "mount", "--takeover", mp], {}, 120_000);
    expect(t.code).toBe(0);
    const r = await sum.done;
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out.split(" ")[0]).toBe(createHash("sha256").update(refSlice(0, 64 * 1048576)).digest("hex"));
    // A new binary that cannot serve: the takeover fails with the reason, and the running daemon serves on.
    const before = await fetchStatus(mp);
    await expect(requestTakeover(mp, ["/bin/false"], () => {}, 30_000)).rejects.toThrow(/the new daemon did not get ready: it exited \(exit code 1\)/);
    const still = await fetchStatus(mp);
    expect(still.pid).toBe(before.pid);
    expect(still.holder!.takeovers).toBe(1);
    // A crash while idle (past the RELEASE of sha256sum's file): the log and status say that requests in flight at a
    // crash cannot be recovered.
    await Bun.sleep(1000);
    const cur = await fetchStatus(mp);
    process.kill(cur.pid, "SIGKILL");
    const next = await statusOf(mp, cur.pid);
    expect(next.holder!.daemonStart).toMatch(/FUSE_NOTIFY_RESEND forced off: requests in flight at that crash cannot be recovered/);
    expect(sh([airroot, "status", mp]).out).toContain("cannot be recovered");
    expect(logOf(mp)).toMatch(/died \(killed by SIGKILL\).*requests in flight at the crash cannot be recovered/);
    // New requests are served: a direct read (no page cache) of a range, compared with the file.
    const off = 37 * 1048576;
    const d = Bun.spawn(["dd", `if=${join(mp, "image.bin")}`, "bs=1M", "count=4", `skip=${off / 1048576}`, "iflag=direct", "status=none"],
      { stdout: "pipe", stderr: "pipe" });
    const killer = setTimeout(() => d.kill("SIGKILL"), 30_000);
    const got = new Uint8Array(await new Response(d.stdout).arrayBuffer());
    clearTimeout(killer);
    expect(await d.exited).toBe(0);
    const ref = refSlice(off, 4 * 1048576);
    expect(Buffer.compare(Buffer.from(got), ref)).toBe(0);
    await unmountAndCheck(mp, next);
  }, 180_000);

  test("a daemon that fails at start is restarted with a growing delay, not in a hot loop; the mount comes back", async () => {
    const { mp, st } = await mount("backoff");
    // No server: every new daemon fails at start (it cannot reach any image server).
    const opts = servers.map((s) => s.opts);
    for (const s of servers) await s.stop();
    for (const o of opts) for (const l of o.listen) await refused(l.host, l.port);
    process.kill(st.pid, "SIGKILL");
    await Bun.sleep(5000);
    const log = logOf(mp);
    const failures = log.match(/died \(exit code 1\) after serving 0\.0 s/g)?.length ?? 0;
    expect(failures).toBeGreaterThanOrEqual(3);
    expect(failures).toBeLessThanOrEqual(7); // 0, 0.25, 0.5, 1, 2 s: ~5 starts in 5 s, not hundreds
    expect(log).toContain("in 250 ms (1 quick failures in a row)");
    expect(log).toContain("in 1000 ms (3 quick failures in a row)");
    // Meanwhile `airroot status` asks the holder.
    const during = sh([airroot, "status", mp]);
    expect(during.out).toContain(`no daemon is serving right now (readers wait); holder pid ${st.holder!.pid} (@airroot-test-holder)`);
    // ... and says why the last daemon died, in its own last words.
    expect(during.out).toMatch(/last daemon exit: exit code 1 at \S+: .*cannot reach any image server/);
    // The servers come back: the next daemon serves, and a direct read (past the page cache) is right.
    servers.splice(0, servers.length);
    for (const o of opts) servers.push(await startNginx(o));
    const next = await statusOf(mp, st.pid, 40_000);
    expect(next.holder!.restarts).toBe(failures + 1);
    const d = await Bun.spawn(["dd", `if=${join(mp, "image.bin")}`, "bs=1M", "count=1", "skip=100", "iflag=direct", "status=none"],
      { stdout: "pipe", stderr: "pipe" });
    const got = new Uint8Array(await new Response(d.stdout).arrayBuffer());
    expect(await d.exited).toBe(0);
    expect(Buffer.compare(Buffer.from(got), refSlice(100 * 1048576, 1048576))).toBe(0);
    await unmountAndCheck(mp, next);
  }, 120_000);
});
