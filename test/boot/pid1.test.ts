// The fast no-VM harness: our real initramfs tree, `airroot init` as PID 1 in fresh pid/mount/net namespaces,
// mounting a squashfs+tmpfs overlay root, switch_root and execve of the image's init.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { mkdirSync } from "node:fs";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { buildTestInitramfs, makeTestRootImage } from "../helpers/boot";

let root = "";
let dir = "";

beforeAll(() => {
  dir = scratchDir("airroot-pid1-");
  const img = makeTestRootImage(join(dir, "img"), { airrootLibs: true });
  const cpio = buildTestInitramfs(join(dir, "initramfs.cpio.zst"), [[img, "images/root.sfs"]]);
  root = join(dir, "root");
  mkdirSync(root);
  const r = Bun.spawnSync(["sh", "-c", `zstd -dc '${cpio}' | (cd '${root}' && cpio -idm --quiet)`], { stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`extracting the initramfs failed: ${r.stderr.toString()}`);
}, 180_000);

afterAll(removeScratchDirs);

/** Runs the initramfs's /init (which execs `airroot init`) as PID 1 of new namespaces chrooted into the initramfs tree; bounded in time. */
async function bootInNamespace(cmdline: string, timeoutMs = 60_000): Promise<{ out: string; code: number }> {
  const proc = Bun.spawn(["unshare", "--pid", "--mount", "--net", "--fork", "--kill-child=SIGKILL", `--root=${root}`,
    "/init"], { stdout: "pipe", stderr: "pipe", env: { PATH: "/usr/bin:/bin", AIRROOT_CMDLINE: cmdline } });
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
  try {
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    return { out: out + err, code };
  } finally {
    clearTimeout(timer);
    proc.kill("SIGKILL");
  }
}

test("PID 1: steps in order, overlay root from a squashfs, switch_root, new init runs, debug sshd survives", async () => {
  const t0 = Date.now();
  const { out } = await bootInNamespace(
    "quiet airroot.rescue=poweroff airroot.skip=console,drivers,net airroot.rootimage=/images/root.sfs airroot.overlaysize=64m -- single x");
  const lines = out.split("\n");
  const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
  expect(at(/Mounting \/proc \/sys \/dev \/run\.\.\.done/)).toBeGreaterThanOrEqual(0);
  expect(at(/Loading drivers\.\.\.skipped/)).toBeGreaterThan(at(/Mounting \/proc/));
  expect(at(/Initializing ssh\.\.\.ssh-keygen: generating new host keys: RSA ECDSA ED25519/)).toBeGreaterThan(at(/Loading drivers/));
  expect(at(/Mounting the root filesystem\.\.\.overlay on \/sysroot: \/images\/root.sfs via \/dev\/loop\d+/)).toBeGreaterThan(at(/Initializing ssh/));
  expect(at(/Personalizing the new root\.\.\.done \(\d+ files?, airroot at \/usr\/local\/sbin\/airroot\)/)).toBeGreaterThan(at(/Mounting the root filesystem/));
  expect(at(/Switching root to \/sysroot/)).toBeGreaterThan(at(/Personalizing the new root/));
  // Every step line carries a timestamp.
  expect(lines.filter((l) => /\.\.\.(done|skipped)/.test(l)).every((l) => /^\[\s*\d+\.\d{3}\] /.test(l))).toBe(true);
  expect(out).toContain("AIRROOT-TEST-INIT: pid 1 args [single x]");
  expect(out).toMatch(/AIRROOT-TEST-ROOT: airroot \/ overlay rw,.*lowerdir=\/mnt\/remote,upperdir=\/mnt\/overlay\/upper,workdir=\/mnt\/overlay\/work/);
  expect(out).toContain("AIRROOT-TEST-WRITE: written");
  expect(out).toContain("AIRROOT-TEST-IMAGE: squashfs-test-root");
  expect(out).toMatch(/AIRROOT-TEST-SSHD: SSH-2\.0-OpenSSH/);
  // airroot is on the booted system's PATH: the initramfs's binary, bind-mounted read-only (not copied).
  expect(out).toMatch(/AIRROOT-TEST-BIN: \d+\.\d+\.\d+\S* ro\n/);
  expect(out).toContain("AIRROOT-TEST-DONE");
  expect(Date.now() - t0).toBeLessThan(60_000);
}, 90_000);

test("PID 1: a failing step is named with its reason and ends in rescue (here: power off), not a panic", async () => {
  const { out } = await bootInNamespace("airroot.rescue=poweroff airroot.skip=console,drivers,net,sshd airroot.rootimage=/images/missing.sfs", 20_000);
  expect(out).toMatch(/Mounting the root filesystem\.\.\.FAILED: root image \/images\/missing.sfs does not exist/);
  expect(out).toMatch(/boot stopped at step "root" \(Mounting the root filesystem\): root image \/images\/missing.sfs does not exist/);
  expect(out).toContain("airroot.rescue=poweroff: powering off");
}, 40_000);

test("PID 1: a bad option stops at the command line step", async () => {
  const { out } = await bootInNamespace("airroot.rescue=poweroff airroot.imagemethod=nfs", 20_000);
  expect(out).toMatch(/boot stopped at step "cmdline".*airroot.imagemethod=nfs: expected ondemand or copy/);
}, 40_000);
