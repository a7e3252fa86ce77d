// The dracut module (initramfs/dracut/95airroot), as RHEL-family sites would use it: build an initramfs with real
// dracut (Debian's dracut-core 059, fetched with apt-get download and run from its unpacked tree, nothing installed)
// and boot it in QEMU (TCG) into the test image over HTTPS. Set AIRROOT_SKIP_VM=1 to skip (never skipped silently).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { kernelDir, makeTestRootImage, privateAirroot, REPO } from "../helpers/boot";
import { freePort } from "../helpers/ports";
import { makeTestPki } from "../helpers/pki";
import { startNginx, type Nginx } from "../helpers/nginx";

const SKIP = process.env.AIRROOT_SKIP_VM === "1";
if (SKIP) console.warn("test/e2e/dracut.test.ts: skipped because AIRROOT_SKIP_VM=1");

const DRACUT_CACHE = join(REPO, ".cache/dracut");

function sh(cmd: string, env: Record<string, string> = {}): string {
  const r = Bun.spawnSync(["bash", "-c", cmd], { stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env } });
  if (r.exitCode !== 0) throw new Error(`${cmd}: ${r.stderr.toString()}${r.stdout.toString()}`);
  return r.stdout.toString();
}

/** dracut-core unpacked into .cache/dracut/root (downloaded once through apt). */
function dracutTree(): string {
  const root = join(DRACUT_CACHE, "root");
  if (existsSync(join(root, "usr/bin/dracut"))) return root;
  mkdirSync(DRACUT_CACHE, { recursive: true });
  if (!readdirSync(DRACUT_CACHE).some((f) => f.startsWith("dracut-core_") && f.endsWith(".deb")))
    sh(`cd '${DRACUT_CACHE}' && apt-get download -q dracut-core`);
  const deb = readdirSync(DRACUT_CACHE).find((f) => f.startsWith("dracut-core_") && f.endsWith(".deb"))!;
  sh(`dpkg-deb -x '${join(DRACUT_CACHE, deb)}' '${root}'`);
  return root;
}

describe.skipIf(SKIP)("dracut-built initramfs", () => {
  let dir = "", initrd = "", vmlinuz = "", guestfwd = "";
  let ng: Nginx | undefined;

  beforeAll(async () => {
    dir = scratchDir("airroot-e2e-dracut-");
    const root = dracutTree();
    // Our module into a private copy of dracut's module tree.
    const base = join(dir, "dracut");
    cpSync(join(root, "usr/lib/dracut"), base, { recursive: true });
    rmSync(join(base, "modules.d/95airroot"), { recursive: true, force: true });
    cpSync(join(REPO, "initramfs/dracut/95airroot"), join(base, "modules.d/95airroot"), { recursive: true });
    const bin = join(dir, "bin");
    mkdirSync(bin);
    copyFileSync(privateAirroot(), join(bin, "airroot"));
    sh(`chmod 0755 '${join(bin, "airroot")}'`);
    mkdirSync(join(dir, "site"));
    const pki = makeTestPki(join(dir, "pki"), ["10.0.2.100"]);
    copyFileSync(pki.caCert, join(dir, "site/ca.pem"));
    const kdir = kernelDir();
    vmlinuz = join(kdir, "vmlinuz");
    const kver = readdirSync(join(kdir, "lib/modules"))[0];
    initrd = join(dir, "initrd.img");
    mkdirSync(join(dir, "conf.d"));
    sh(`bash '${join(root, "usr/bin/dracut")}' --no-hostonly --force --kver ${kver} --kmoddir '${join(kdir, "lib/modules", kver)}' ` +
      `--modules "base airroot" --omit "systemd systemd-initrd dracut-systemd" --no-early-microcode --conf /dev/null ` +
      `--confdir '${join(dir, "conf.d")}' --compress zstd '${initrd}'`,
      { dracutbasedir: base, DRACUT_PATH: `${bin} /usr/sbin /usr/bin /sbin /bin`, PATH: `${bin}:${process.env.PATH}`, AIRROOT_SITE_DIR: join(dir, "site") });
    const img = makeTestRootImage(join(dir, "img"));
    mkdirSync(join(dir, "www"));
    copyFileSync(img, join(dir, "www/root.sfs"));
    const port = await freePort("127.0.0.1");
    ng = await startNginx({ root: join(dir, "www"), listen: [{ host: "127.0.0.1", port }], cert: pki.serverCert, key: pki.serverKey, workDir: join(dir, "ng") });
    guestfwd = `,guestfwd=tcp:10.0.2.100:443-cmd:nc 127.0.0.1 ${port}`;
  }, 300_000);

  afterAll(async () => {
    await ng?.stop();
    removeScratchDirs();
  });

  test("dracut's /init hands over to airroot init: drivers, DHCP, sshd, on-demand root, switch_root", async () => {
    const vm = Bun.spawn(["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1024", "-nographic", "-no-reboot",
      "-kernel", vmlinuz, "-initrd", initrd, "-append", "quiet airroot.imageurl=https://10.0.2.100/root.sfs airroot.rescue=poweroff",
      "-netdev", `user,id=n0,restrict=on${guestfwd}`, "-device", "virtio-net-pci,netdev=n0"], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    let out = "";
    const read = (async () => { for await (const c of vm.stdout) out += new TextDecoder().decode(c).replace(/\r/g, ""); })();
    try {
      const deadline = Date.now() + 120_000;
      while (!out.includes("AIRROOT-TEST-DONE") && Date.now() < deadline && vm.exitCode === null) await Bun.sleep(250);
      // The guest powers off right after its last line: what it printed may still be in the pipe when QEMU exits.
      if (vm.exitCode !== null) await Promise.race([read, Bun.sleep(5000)]);
      if (!out.includes("AIRROOT-TEST-DONE")) throw new Error(`the image's init did not finish; console:\n${out}`);
      expect(out).toMatch(/Automatic console configured for ttyS0,115200/);
      expect(out).toMatch(/Loading drivers\.\.\.done/);
      expect(out).toMatch(/Setting up eth0 via DHCP at 10\.0\.2\.15\/24/);
      expect(out).toMatch(/debug sshd on port 2222/);
      expect(out).toMatch(/overlay on \/sysroot: \/mnt\/image\/root\.sfs via \/dev\/loop\d+/);
      expect(out).toMatch(/AIRROOT-TEST-ROOT: airroot \/ overlay /);
      expect(out).toMatch(/AIRROOT-TEST-SSHD: SSH-2\.0-OpenSSH/);
      expect(await Promise.race([vm.exited, Bun.sleep(20_000).then(() => "still running")])).toBe(0);
    } finally {
      vm.kill("SIGKILL");
    }
  }, 180_000);
});
