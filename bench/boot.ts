// `make bench`, boot part (`bun run bench/boot.ts`): boots the real Debian systemd image (cached by
// test/e2e/systemd.test.ts) in QEMU (TCG) with the airroot initramfs, on demand, with airroot.imagemethod=copy and
// untethered (airroot.untether=ram) in the same run, and measures for each: time from QEMU start to sshd answering on
// port 22, the bytes the image server sent during the boot (its access log) against the image size, and `free -m` in
// the booted OS (for the untethered node: once its root reads the copy in RAM, the state it then stays in).
// Loopback only (QEMU user networking with restrict=on, guestfwd to nginx on 127.0.0.1); each boot is bounded.
import { join } from "node:path";
import { chmodSync, copyFileSync, existsSync, mkdirSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { scratchDir, removeScratchDirs } from "../test/helpers/tmp";
import { makeTestPki } from "../test/helpers/pki";
import { startNginxSite, type NginxSite } from "../test/helpers/nginx-site";
import { freePort } from "../test/helpers/ports";
import { E2E_CACHE, kernelDir, REPO } from "../test/helpers/boot";
import { parseFreeMem, sshGuest, startVm, type FreeMem, type Vm } from "../test/helpers/qemu";
import { signImage } from "../test/helpers/signed-image";
import { debianImagePaths } from "../test/helpers/debian-image";
import { RANGE_LOG_FORMAT, servedRanges } from "../test/helpers/access-log";

const MiB = 1048576;
const { image: IMAGE, suite: SUITE } = debianImagePaths();
const AIRROOT = process.env.AIRROOT_BENCH_AIRROOT ?? join(REPO, "dist", "airroot");
const SERVER_IP = "10.0.2.100";
/** Bound on one boot, QEMU start to sshd answering (TCG on a shared 2-core machine). */
const BOOT_TIMEOUT_MS = 180_000;
const METHODS = ["on-demand", "copy", "untethered"] as const;
const METHOD_OPTION: Record<Method, string> = { "on-demand": "", copy: " airroot.imagemethod=copy", untethered: " airroot.untether=ram" };
/** Bound on the untethered node's background fill, from sshd answering to the loop switched to the copy. */
const UNTETHER_TIMEOUT_MS = 300_000;
type Method = (typeof METHODS)[number];

export interface BootRow {
  method: Method;
  /** QEMU start to the console's "Switching root" line, and to an SSH banner on port 22 of the booted OS. */
  switchRootS: number;
  sshReadyS: number;
  /** Untethered: QEMU start to `airroot status` showing the loop device on the local copy. */
  untetheredS?: number;
  /** Response body bytes the image server sent until sshd answered: the image (all, and distinct), and the manifest. */
  imageBytesFetched: number;
  imageDistinctBytes: number;
  manifestBytesFetched: number;
  imageRequests: number;
  imageBytes: number;
  /** `free -m` in the booted OS (MiB): the Mem: row. */
  mem: FreeMem;
  /** VmRSS of the mount engine (@airroot-root) in the booted OS; absent for copy. */
  daemonRssMiB?: number;
  /** The mount engine's own counters (`airroot status --json`, run from the initramfs through /proc/PID/root). */
  daemon?: { bytesFetched: number; cacheHits: number; cacheMisses: number; readsTotal: number };
}

/** Resolves true once something on 127.0.0.1:port sends an SSH banner (slirp accepts even with no guest listener). */
function sshBanner(port: number, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: "127.0.0.1", port });
    let buf = "";
    const done = (ok: boolean) => { clearTimeout(t); s.destroy(); resolve(ok); };
    const t = setTimeout(() => done(false), timeoutMs);
    s.on("data", (d) => { buf += d.toString("latin1"); if (buf.startsWith("SSH-2.0-")) done(true); });
    s.on("error", () => done(false));
    s.on("close", () => done(false));
  });
}

async function bootOnce(method: Method, o: { vmlinuz: string; initrd: string; key: string; serverPort: number; accessLog: string; imageBytes: number }): Promise<BootRow> {
  writeFileSync(o.accessLog, ""); // nginx appends (O_APPEND): each boot counts from zero
  const p22 = await freePort();
  const vm: Vm = startVm({ kernel: o.vmlinuz, initrd: o.initrd, memoryMiB: 1536,
    append: `quiet airroot.imageurl=https://${SERVER_IP}/root.sfs airroot.manifest=https://${SERVER_IP}/root.manifest ` +
      `airroot.rescue=poweroff${METHOD_OPTION[method]}`,
    guestfwd: [{ guest: SERVER_IP, hostPort: o.serverPort }], hostfwd: [{ guestPort: 22, hostPort: p22 }] });
  try {
    let switchRootS = NaN, sshReadyS = NaN;
    while (vm.elapsedMs() < BOOT_TIMEOUT_MS && vm.proc.exitCode === null) {
      if (Number.isNaN(switchRootS) && vm.output().includes("Switching root")) switchRootS = vm.elapsedMs() / 1000;
      if (await sshBanner(p22)) { sshReadyS = vm.elapsedMs() / 1000; break; }
      await Bun.sleep(200);
    }
    if (Number.isNaN(sshReadyS)) {
      throw new Error(`${method}: no sshd on port 22 within ${BOOT_TIMEOUT_MS / 1000} s; console tail:\n${vm.output().slice(-3000)}`);
    }
    let untetheredS: number | undefined;
    if (method === "untethered") {
      while (vm.elapsedMs() < sshReadyS * 1000 + UNTETHER_TIMEOUT_MS && vm.proc.exitCode === null) {
        const st = await sshGuest(p22, o.key, "p=$(pgrep -f '^@airroot-root' | head -n1) && /proc/$p/root/usr/bin/airroot status /mnt/image", 30_000);
        if (/^untethered: /m.test(st.out)) { untetheredS = vm.elapsedMs() / 1000; break; }
        await Bun.sleep(2000);
      }
      if (untetheredS === undefined) throw new Error(`untethered: the root was not on its local copy ${UNTETHER_TIMEOUT_MS / 1000} s after sshd answered`);
    }
    const img = servedRanges(o.accessLog, "root.sfs"), man = servedRanges(o.accessLog, "root.manifest");
    // Key login may need a moment after the banner (authorized_keys in the overlay is ready; sshd may still be forking).
    let free = { out: "", err: "", code: -1 };
    const cmd = "free -m; p=$(pgrep -f '^@airroot-root' | head -n1); [ -n \"$p\" ] && grep VmRSS /proc/$p/status || true";
    for (let i = 0; i < 10 && free.code !== 0; i++) {
      free = await sshGuest(p22, o.key, cmd, 30_000);
      if (free.code !== 0) await Bun.sleep(1000);
    }
    if (free.code !== 0) throw new Error(`${method}: ssh to the booted OS failed: ${free.err.trim()}`);
    const rss = free.out.match(/VmRSS:\s+(\d+) kB/);
    let daemon: BootRow["daemon"];
    if (method !== "copy") {
      const st = await sshGuest(p22, o.key, "p=$(pgrep -f '^@airroot-root' | head -n1) && /proc/$p/root/usr/bin/airroot status --json /mnt/image", 60_000);
      try {
        const img = JSON.parse(st.out).image;
        daemon = { bytesFetched: img.bytesFetched, cacheHits: img.cacheHits, cacheMisses: img.cacheMisses, readsTotal: img.readsTotal };
      } catch { console.log(`bench/boot: no daemon status (${st.err.trim() || st.out.slice(0, 200)})`); }
    }
    await sshGuest(p22, o.key, "systemctl poweroff", 15_000);
    await Promise.race([vm.exited, Bun.sleep(60_000)]);
    return { method, switchRootS, sshReadyS, untetheredS, imageBytesFetched: img.bodyBytes, imageDistinctBytes: img.distinctBytes, manifestBytesFetched: man.bodyBytes,
      imageRequests: img.requests, imageBytes: o.imageBytes, mem: parseFreeMem(free.out),
      daemonRssMiB: rss ? Number(rss[1]) / 1024 : undefined, daemon };
  } finally {
    vm.kill();
    await vm.exited;
  }
}

async function main(): Promise<void> {
  if (!existsSync(IMAGE)) {
    console.log(`bench/boot.ts: skipped: ${IMAGE} is missing; \`bun test test/e2e/systemd.test.ts\` builds it (mmdebstrap)`);
    return;
  }
  if (!existsSync(AIRROOT)) throw new Error(`${AIRROOT} is missing: run \`make build\` (or set AIRROOT_BENCH_AIRROOT)`);
  const dir = scratchDir("airroot-bench-boot-");
  chmodSync(dir, 0o755); // nginx workers run as nobody
  let ng: NginxSite | undefined;
  const rows: BootRow[] = [];
  try {
    const imageBytes = statSync(IMAGE).size;
    console.log(`bench/boot: ${SUITE} image ${(imageBytes / MiB).toFixed(1)} MiB; signing its manifest, building the initramfs`);
    mkdirSync(join(dir, "www"));
    mkdirSync(join(dir, "site"));
    symlinkSync(IMAGE, join(dir, "www/root.sfs"));
    const signed = signImage(IMAGE, join(dir, "state"), join(dir, "www/root.manifest"));
    writeFileSync(join(dir, "site/image-key.pem"), signed.publicKeyPem);
    const key = join(dir, "id");
    const kg = Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key]);
    if (kg.exitCode !== 0) throw new Error(`ssh-keygen failed: ${kg.stderr.toString()}`);
    copyFileSync(`${key}.pub`, join(dir, "site/authorized_keys"));
    const pki = makeTestPki(join(dir, "pki"), [SERVER_IP]);
    copyFileSync(pki.caCert, join(dir, "site/ca.pem"));
    const accessLog = join(dir, "access.log");
    const serverPort = await freePort();
    // The Range of each request is logged too, so bytes fetched again (cache evictions) show against distinct bytes.
    ng = await startNginxSite({ workDir: join(dir, "ng"), waitFor: [{ host: "127.0.0.1", port: serverPort }], siteConfig: `${RANGE_LOG_FORMAT}
server {
  listen 127.0.0.1:${serverPort} ssl;
  ssl_certificate ${pki.serverCert};
  ssl_certificate_key ${pki.serverKey};
  root ${join(dir, "www")};
  disable_symlinks off;
  keepalive_requests 100000;
  access_log ${accessLog} airroot_ranges;
}
` });
    const kdir = kernelDir();
    const initrd = join(dir, "initrd.zst");
    const b = Bun.spawnSync([process.execPath, "initramfs/build.ts", "--kernel-dir", kdir, "--out", initrd, "--airroot", AIRROOT,
      "--site", join(dir, "site")], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
    if (b.exitCode !== 0) throw new Error(`initramfs/build.ts failed: ${b.stderr.toString()}${b.stdout.toString()}`);
    for (const method of METHODS) {
      console.log(`bench/boot: booting (${method}), up to ${BOOT_TIMEOUT_MS / 1000} s`);
      rows.push(await bootOnce(method, { vmlinuz: join(kdir, "vmlinuz"), initrd, key, serverPort, accessLog, imageBytes }));
    }
  } finally {
    await ng?.stop().catch(() => {});
    removeScratchDirs();
  }
  const f = (n: number | undefined, d = 1) => (n === undefined || !Number.isFinite(n) ? "-" : n.toFixed(d));
  console.log("\n| method | switch_root s | sshd on 22 s | untethered s | image MiB fetched (of) | % of image | distinct MiB | requests | free -m used | shared | available | daemon RSS MiB |");
  console.log("|---|---|---|---|---|---|---|---|---|---|---|---|");
  for (const r of rows) {
    console.log(`| ${r.method} | ${f(r.switchRootS)} | ${f(r.sshReadyS)} | ${f(r.untetheredS)} | ${f(r.imageBytesFetched / MiB)} (${f(r.imageBytes / MiB)}) | ` +
      `${f((100 * r.imageBytesFetched) / r.imageBytes, 0)}% | ${f(r.imageDistinctBytes / MiB)} | ${r.imageRequests} | ${r.mem.used} | ${r.mem.shared} | ${r.mem.available} | ${f(r.daemonRssMiB)} |`);
  }
  for (const r of rows) if (r.daemon) {
    console.log(`${r.method}: the mount engine's own view after the boot: fetched ${f(r.daemon.bytesFetched / MiB)} MiB, ` +
      `cache hits ${r.daemon.cacheHits} / misses ${r.daemon.cacheMisses}, ${r.daemon.readsTotal} reads`);
  }
  console.log("(TCG emulation on a shared machine: compare the methods within this run only. \"used\" excludes tmpfs/ramfs " +
    "pages, which `free` counts as shared and buff/cache: the copy's image in RAM shows there and in available.)");
  mkdirSync(join(import.meta.dir, "results"), { recursive: true });
  writeFileSync(join(import.meta.dir, "results", "boot.json"), JSON.stringify({ date: new Date().toISOString(), image: IMAGE, rows }, null, 2));
  console.log("\nwrote bench/results/boot.json");
}

if (import.meta.main) await main();
