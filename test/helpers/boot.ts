// Boot test artifacts: a private airroot build, the Debian kernel, our initramfs, and a tiny squashfs root image.
import { chmodSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

export const REPO = resolve(import.meta.dir, "../..");
export const E2E_CACHE = join(REPO, ".cache/e2e");

function run(cmd: string[], env: Record<string, string> = {}): string {
  const r = Bun.spawnSync(cmd, { cwd: REPO, stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env } });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed: ${r.stderr.toString()}${r.stdout.toString()}`);
  return r.stdout.toString();
}

let airroot: string | undefined;
/** Builds a private dist/airroot (others may rebuild dist/airroot concurrently). Once per test process. */
export function privateAirroot(): string {
  if (airroot) return airroot;
  mkdirSync(E2E_CACHE, { recursive: true });
  const out = join(E2E_CACHE, `airroot-${process.pid}`);
  run([join(REPO, "node_modules/.bin/bun"), "run", "build.ts"], { AIRROOT_OUT: out });
  // 100+ MB per test process: remove it when the process ends.
  process.on("exit", () => { try { require("node:fs").rmSync(out, { force: true }); } catch {} });
  return (airroot = out);
}

/**
 * The Debian kernel directory from initramfs/fetch-kernel.sh (downloads once, then cached): the node suite's kernel
 * (the script's default, trixie) unless a suite is named (bookworm, say).
 */
export function kernelDir(suite?: string): string {
  return run(["bash", "initramfs/fetch-kernel.sh", join(REPO, ".cache/kernel"), ...(suite ? [suite] : [])]).trim().split("\n").pop()!;
}

/** The node suite's Secure Boot chain for network boot (initramfs/fetch-signed-boot.sh): holds shimx64.efi and grubx64.efi. */
export function signedBootDir(suite?: string): string {
  return run(["bash", "initramfs/fetch-signed-boot.sh", join(REPO, ".cache/kernel"), ...(suite ? [suite] : [])]).trim().split("\n").pop()!;
}

/** The Debian suite a kernel directory came from (written by fetch-kernel.sh). */
export function kernelSuite(kdir = kernelDir()): string {
  return readFileSync(join(kdir, "suite"), "utf8").trim();
}

/** Builds our initramfs with the given extra files, fast zstd level (tests do not need the smallest file). */
export function buildTestInitramfs(out: string, add: [string, string][] = [], kdir = kernelDir(), site?: string): string {
  const args = [join(REPO, "node_modules/.bin/bun"), "initramfs/build.ts", "--kernel-dir", kdir, "--out", out,
    "--airroot", privateAirroot(), "--level", "3", ...(site ? ["--site", site] : [])];
  for (const [src, dest] of add) args.push("--add", `${src}=${dest}`);
  run(args);
  return out;
}

/**
 * The /sbin/init of the test root image: proves it runs as the new init, on the overlay, that the root is writable,
 * and that the debug sshd (left in the initramfs environment) still answers; then powers off.
 */
export const TEST_INIT = `#!/bin/sh
echo "AIRROOT-TEST-INIT: pid $$ args [$*]"
echo "AIRROOT-TEST-KERNEL: $(uname -r)"
grep ' / ' /proc/mounts | sed 's/^/AIRROOT-TEST-ROOT: /'
echo written > /written-by-init && echo "AIRROOT-TEST-WRITE: $(cat /written-by-init)"
echo "AIRROOT-TEST-IMAGE: $(cat /etc/airroot-test-image)"
echo "AIRROOT-TEST-NM: $(grep -h -e '^mac-address=' -e '^method=' /etc/NetworkManager/system-connections/*.nmconnection 2>&1 | tr '\n' ' ')"
banner=$(echo | timeout 5 nc 127.0.0.1 2222 2>/dev/null | head -n1)
echo "AIRROOT-TEST-SSHD: $banner"
echo "AIRROOT-TEST-SSHD-LOG: $(cat /run/airroot/sshd.log 2>&1 | tr '\n' '|')"
ps -o pid,ppid,args | sed "s/^/AIRROOT-TEST-PS: /"
if [ -e /usr/local/sbin/airroot ]; then
  echo "AIRROOT-TEST-BIN: $(/usr/local/sbin/airroot --version 2>&1 | head -n1) $(grep ' /usr/local/sbin/airroot ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1)"
fi
echo "AIRROOT-TEST-DONE"
poweroff -f
sleep 30
`;

export interface TestRootOptions {
  /** /sbin/init's text; default TEST_INIT. */
  init?: string;
  /** Also the shared libraries the airroot binary needs (glibc), so the bind-mounted airroot runs in this root. */
  airrootLibs?: boolean;
}

/** A squashfs root with busybox and TEST_INIT as /sbin/init. */
export function makeTestRootImage(dir: string, o: TestRootOptions = {}): string {
  const tree = join(dir, "tree");
  for (const d of ["bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp", "mnt"]) mkdirSync(join(tree, d), { recursive: true });
  run(["cp", "/bin/busybox", join(tree, "bin/busybox")]);
  for (const applet of ["sh", "grep", "sed", "cat", "echo", "poweroff", "nc", "head", "timeout", "sleep", "mount", "ls", "tr", "ps", "cut", "chroot", "pidof"])
    symlinkSync("busybox", join(tree, "bin", applet));
  if (o.airrootLibs) {
    for (const line of run(["ldd", privateAirroot()]).split("\n")) {
      const lib = /=>\s*(\/\S+)/.exec(line)?.[1] ?? /^\s*(\/\S+)\s+\(/.exec(line)?.[1];
      if (!lib) continue;
      mkdirSync(join(tree, lib, ".."), { recursive: true });
      run(["cp", "-L", lib, join(tree, lib)]);
    }
  }
  writeFileSync(join(tree, "sbin/init"), o.init ?? TEST_INIT);
  chmodSync(join(tree, "sbin/init"), 0o755);
  writeFileSync(join(tree, "etc/airroot-test-image"), "squashfs-test-root\n");
  const img = join(dir, "root.sfs");
  run(["mksquashfs", tree, img, "-comp", "zstd", "-noappend", "-quiet", "-all-root"]);
  if (!existsSync(img)) throw new Error("mksquashfs produced no image");
  return img;
}
