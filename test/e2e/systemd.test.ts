// QEMU (TCG) boot of a real Debian bookworm image (systemd, OpenSSH, NetworkManager) mounted on demand over HTTPS:
// the booted OS runs on the overlay, ssh on 22 shows the overlay and on 2222 the initramfs, NetworkManager shows the
// boot connection, every file under /usr reads back identical after dropping caches, and poweroff is clean.
// Set AIRROOT_SKIP_VM=1 to skip (it is never skipped silently). The image is built once into .cache/e2e.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { buildTestInitramfs, E2E_CACHE, kernelDir } from "../helpers/boot";
import { freePort } from "../helpers/ports";
import { makeTestPki } from "../helpers/pki";
import { startNginx, type Nginx } from "../helpers/nginx";

const SKIP = process.env.AIRROOT_SKIP_VM === "1";
if (SKIP) console.warn("test/e2e/systemd.test.ts: skipped because AIRROOT_SKIP_VM=1");

const IMAGE = join(E2E_CACHE, "debian-root.sfs");
const USR_DIGEST = join(E2E_CACHE, "debian-root.usr.sha256");
/** sha256 over the sorted list of "sha256  path" of every regular file under usr/ (run from /). */
const DIGEST_CMD = "cd / && find usr -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1";

function sh(cmd: string, cwd?: string): string {
  const r = Bun.spawnSync(["sh", "-c", cmd], { cwd, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/** mmdebstrap of bookworm minbase with systemd, sshd, NetworkManager; squashfs'd once and cached with its /usr digest. */
function debianImage(): string {
  if (existsSync(IMAGE) && existsSync(USR_DIGEST)) return IMAGE;
  const work = scratchDir("airroot-debian-");
  const tree = join(work, "tree");
  sh(`mmdebstrap --quiet --variant=minbase --include=systemd-sysv,openssh-server,iproute2,udev,network-manager,procps bookworm ${tree}`);
  writeFileSync(join(tree, "etc/hostname"), "airroot-node\n");
  const digest = sh(DIGEST_CMD.replace("cd /", `cd ${tree}`)).trim();
  mkdirSync(E2E_CACHE, { recursive: true });
  sh(`mksquashfs ${tree} ${IMAGE}.tmp -comp zstd -noappend -quiet`);
  renameSync(`${IMAGE}.tmp`, IMAGE);
  writeFileSync(USR_DIGEST, digest + "\n");
  rmSync(tree, { recursive: true, force: true });
  return IMAGE;
}

describe.skipIf(SKIP)("QEMU boot into systemd", () => {
  let dir = "", key = "", initrd = "", vmlinuz = "", port = 0;
  let ng: Nginx | undefined;

  beforeAll(async () => {
    dir = scratchDir("airroot-e2e-systemd-");
    const image = debianImage();
    mkdirSync(join(dir, "site"));
    key = join(dir, "id");
    sh(`ssh-keygen -q -t ed25519 -N '' -f ${key}`);
    copyFileSync(`${key}.pub`, join(dir, "site/authorized_keys"));
    const pki = makeTestPki(join(dir, "pki"), ["10.0.2.100"]);
    copyFileSync(pki.caCert, join(dir, "site/ca.pem"));
    mkdirSync(join(dir, "www"));
    symlinkSync(image, join(dir, "www/root.sfs"));
    port = await freePort("127.0.0.1");
    ng = await startNginx({ root: join(dir, "www"), listen: [{ host: "127.0.0.1", port }], cert: pki.serverCert, key: pki.serverKey,
      workDir: join(dir, "ng"), extra: "disable_symlinks off;" });
    const kdir = kernelDir();
    vmlinuz = join(kdir, "vmlinuz");
    initrd = buildTestInitramfs(join(dir, "initrd.zst"), [], kdir, join(dir, "site"));
  }, 300_000);

  afterAll(async () => {
    await ng?.stop();
    removeScratchDirs();
  });

  test("systemd multi-user on the on-demand overlay; ssh 22 and 2222; NetworkManager; /usr intact; clean poweroff", async () => {
    const p22 = await freePort(), p2222 = await freePort();
    const vm = Bun.spawn(["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1536", "-nographic", "-no-reboot",
      "-kernel", vmlinuz, "-initrd", initrd, "-append", "quiet airroot.imageurl=https://10.0.2.100/root.sfs airroot.rescue=poweroff",
      "-netdev", `user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:${p22}-:22,hostfwd=tcp:127.0.0.1:${p2222}-:2222,` +
        `guestfwd=tcp:10.0.2.100:443-cmd:nc 127.0.0.1 ${port}`,
      "-device", "virtio-net-pci,netdev=n0"], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    let out = "";
    (async () => { for await (const c of vm.stdout) out += new TextDecoder().decode(c).replace(/\r/g, ""); })();
    const ssh = async (p: number, cmd: string, timeoutMs = 60_000) => {
      const s = Bun.spawn(["ssh", "-p", String(p), "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "root@127.0.0.1", cmd],
        { stdout: "pipe", stderr: "pipe" });
      const t = setTimeout(() => s.kill("SIGKILL"), timeoutMs);
      const [o, e, code] = await Promise.all([new Response(s.stdout).text(), new Response(s.stderr).text(), s.exited]);
      clearTimeout(t);
      return { out: o, err: e, code };
    };
    try {
      const deadline = Date.now() + 150_000;
      while (!/login:/.test(out) && Date.now() < deadline && vm.exitCode === null) await Bun.sleep(500);
      if (!/login:/.test(out)) throw new Error(`no login prompt on the serial console; console:\n${out}`);
      let ok = false;
      for (let i = 0; i < 20 && !ok; i++) { ok = (await ssh(p22, "true", 20_000)).code === 0; if (!ok) await Bun.sleep(2000); }
      expect(ok).toBe(true);

      const os = await ssh(p22, "grep ' / ' /proc/mounts; systemctl is-system-running --wait; nmcli -t -f NAME,DEVICE c show --active; hostname");
      expect(os.out).toMatch(/^airroot \/ overlay rw,.*lowerdir=\/mnt\/remote,upperdir=\/mnt\/overlay\/upper,workdir=\/mnt\/overlay\/work/m);
      expect(os.out).toMatch(/^(running|degraded)$/m);
      expect(os.out).toMatch(/^eth0:eth0$/m); // our keyfile connection, assumed by NetworkManager
      const initramfs = await ssh(p2222, "grep ' / ' /proc/mounts");
      expect(initramfs.out).toMatch(/^rootfs \/ rootfs /m);

      // The mount engine survived switch_root: with the page cache dropped, every /usr file reads back as in the image.
      const digest = await ssh(p22, `echo 3 > /proc/sys/vm/drop_caches; ${DIGEST_CMD}`, 240_000);
      expect(digest.out.trim()).toBe(readFileSync(USR_DIGEST, "utf8").trim());

      await ssh(p22, "systemctl poweroff", 20_000);
      const code = await Promise.race([vm.exited, Bun.sleep(120_000).then(() => "still running")]);
      if (code !== 0) throw new Error(`poweroff did not finish (${code}); console tail:\n${out.slice(-3000)}`);
    } finally {
      vm.kill("SIGKILL");
    }
  }, 600_000);
});
