// QEMU (TCG) boot of a real Debian image (trixie, the node suite: systemd, OpenSSH, NetworkManager) on trixie's
// kernel from a real deployment site:
// the image packed with `airroot image pack` into an `airroot serve` state, served by `airroot serve` (in its own
// network namespace, so it can listen on 443) and two nginx mirrors from `serve mirror-config`, swtpm as the guest's
// TPM, the site directory from `serve site-config` in the initramfs. First boot: the armed node enrolls and seals its
// credential; the booted OS runs on the overlay; ssh on 22 and 2222 present host certificates checked against the
// SSH CA (StrictHostKeyChecking=yes); NetworkManager shows the boot connection; every file under /usr reads back
// identical after dropping caches, also after `kill -9` of the root mount daemon in the middle of a read (the holder
// keeps the FUSE connection; the next daemon sends FUSE_NOTIFY_RESEND, Linux >= 6.9: the read completes, right); `airroot status /mnt/image` works over ssh on 22 and 2222; `node list` shows the
// node running (the boot reporter's stage once multi-user.target is reached, sent with a one-boot report token, not
// the node credential); clean poweroff. Second boot (same TPM state, not armed): the sealed credential is reused, and
// airroot.untether=ram: the daemon fills a verified copy of the image in the initramfs's RAM and switches the root's
// loop device to it; `node list` shows "untethered"; then the deployment server and both mirrors are stopped and every
// /usr file still reads back right. (imagemethod=copy is booted in test/e2e/boot.test.ts.)
// Set AIRROOT_SKIP_VM=1 to skip (never skipped silently).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { Subprocess } from "bun";
import { KEY_SCAN_JS } from "../helpers/key-scan";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { buildTestInitramfs, E2E_CACHE, kernelDir, privateAirroot } from "../helpers/boot";
import { freePort } from "../helpers/ports";
import { debianImage, debianImagePaths, USR_DIGEST_CMD } from "../helpers/debian-image";
import { startNginxSite, type NginxSite } from "../helpers/nginx-site";
import { readConfig, statePaths, writeConfig } from "../../src/server/state";

const SKIP = process.env.AIRROOT_SKIP_VM === "1";
if (SKIP) console.warn("test/e2e/systemd.test.ts: skipped because AIRROOT_SKIP_VM=1");

const MAC = "52:54:00:12:34:56";
const SERVER_IP = "10.0.2.100";
const MIRROR_IPS = ["10.0.2.101", "10.0.2.102"];

function sh(cmd: string, cwd?: string): string {
  const r = Bun.spawnSync(["sh", "-c", cmd], { cwd, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/** The same command over the image's own tree (mounted read-only here): what the node must read back. */
function expectedBigSum(image: string, cmd: string): string {
  const mnt = scratchDir("airroot-e2e-image-");
  sh(`mount -o loop,ro ${image} ${mnt}`);
  try { return sh(`cd ${mnt} && ${cmd}`).trim(); } finally { sh(`umount ${mnt}`); }
}

/** The last run's serial console, kept beside the cached image for whoever debugs a failure. */
function keepConsole(name: string, text: string): void {
  try { writeFileSync(join(E2E_CACHE, name), text); } catch {}
}

describe.skipIf(SKIP)("QEMU boot into systemd from an airroot site", () => {
  let dir = "", key = "", initrd = "", vmlinuz = "", state = "", airroot = "", ns = "", image = "";
  let guestfwd = "";
  let server: Subprocess | undefined;
  const mirrors: NginxSite[] = [];
  let tpm: Subprocess | undefined;
  let usedOnDemand = 0;
  let imageKeyHex = "";

  const run = (args: string[]) => sh(args.map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(" "));
  const node = (...args: string[]) => run([airroot, "node", ...args, "--state", state]);

  beforeAll(async () => {
    dir = scratchDir("airroot-e2e-systemd-");
    image = debianImage();
    airroot = privateAirroot();
    state = join(dir, "state");
    key = join(dir, "id");
    sh(`ssh-keygen -q -t ed25519 -N '' -f ${key}`);
    run([airroot, "serve", "init", "--state", state, "--address", SERVER_IP]);
    const c = readConfig(state);
    writeConfig(state, { ...c, mirrors: MIRROR_IPS.map((ip) => `https://${ip}`), rootAuthorizedKeys: [readFileSync(`${key}.pub`, "utf8").trim()] });
    // Pack the cached image's tree as a site admin would (the content, and so the /usr digest, is the same).
    const tree = join(dir, "tree");
    sh(`unsquashfs -q -n -d ${tree} ${image}`);
    // Encrypted (dm-crypt, AES-256-XTS, a key of its own): the node gets the key only in its mutual-TLS config.
    run([airroot, "image", "pack", tree, "--state", state, "--profile", "compute", "--encrypt"]);
    rmSync(tree, { recursive: true, force: true });
    const packed = readdirSync(statePaths(state).images).filter((f) => f.endsWith(".sfs"));
    if (packed.length !== 1) throw new Error(`expected one packed image, found ${packed.join(" ")}`);
    imageKeyHex = readFileSync(join(state, "image-keys", packed[0].replace(/\.sfs$/, ".key")), "utf8").trim();
    // What a mirror holds is ciphertext: no squashfs magic.
    if (readFileSync(join(statePaths(state).images, packed[0])).subarray(0, 4).toString("latin1") === "hsqs") throw new Error("the encrypted image starts with the squashfs magic");
    // nginx workers run as nobody: they need to read STATE/images (the state dir itself is 0700; keys/ stays so).
    sh(`chmod 0755 ${dir} ${state} ${statePaths(state).images} && chmod 0644 ${statePaths(state).images}/*`);
    node("add", "n001", "--mac", MAC, "--profile", "compute");
    node("arm", "n001", "--once");

    // airroot serve on 443 inside a private network namespace (its loopback only); QEMU reaches it through nc there.
    ns = `ar-e2e-${process.pid}`;
    sh(`ip netns add ${ns} && ip -n ${ns} link set lo up`);
    server = Bun.spawn(["ip", "netns", "exec", ns, airroot, "serve", "--state", state, "--listen", "0.0.0.0:443", "--no-discovery"],
      { stdout: "ignore", stderr: "pipe" });
    let up = false;
    for (let i = 0; i < 100 && !up; i++) {
      up = Bun.spawnSync(["ip", "netns", "exec", ns, "nc", "-z", "127.0.0.1", "443"]).exitCode === 0;
      if (!up) await Bun.sleep(200);
    }
    if (!up) throw new Error("airroot serve did not listen on 443 in its namespace within 20 s");

    // Two stock nginx mirrors on loopback with configs and certificates from airroot.
    const cert = join(dir, "mirror");
    run([airroot, "serve", "mirror-cert", "--state", state, "--address", MIRROR_IPS.join(","), "--out", cert]);
    const fwd = [`guestfwd=tcp:${SERVER_IP}:443-cmd:ip netns exec ${ns} nc 127.0.0.1 443`];
    for (const [i, ip] of MIRROR_IPS.entries()) {
      const port = await freePort("127.0.0.1");
      const conf = run([airroot, "serve", "mirror-config", "nginx", "--state", state, "--listen", `127.0.0.1:${port}`, "--cert", `${cert}.crt`, "--key", `${cert}.key`]);
      mirrors.push(await startNginxSite({ workDir: join(dir, `ng${i}`), siteConfig: conf, waitFor: [{ host: "127.0.0.1", port }] }));
      fwd.push(`guestfwd=tcp:${ip}:443-cmd:nc 127.0.0.1 ${port}`);
    }
    guestfwd = fwd.join(",");

    run([airroot, "serve", "site-config", "--state", state, "--out", join(dir, "site")]);
    const kdir = kernelDir();
    vmlinuz = join(kdir, "vmlinuz");
    initrd = buildTestInitramfs(join(dir, "initrd.zst"), [], kdir, join(dir, "site"));
  }, 420_000);

  afterAll(async () => {
    tpm?.kill("SIGKILL");
    server?.kill("SIGTERM");
    await Promise.race([server?.exited, Bun.sleep(5000)]);
    server?.kill("SIGKILL");
    for (const m of mirrors) await m.stop();
    if (ns) Bun.spawnSync(["ip", "netns", "del", ns]);
    removeScratchDirs();
  });

  /** swtpm for the guest; a new process per boot (a reboot resets PCRs), the same state dir (the same TPM). */
  async function startTpm(): Promise<string> {
    const tdir = join(dir, "tpm");
    mkdirSync(tdir, { recursive: true });
    const sock = join(dir, "tpm.sock");
    rmSync(sock, { force: true });
    tpm = Bun.spawn(["swtpm", "socket", "--tpm2", "--tpmstate", `dir=${tdir}`, "--ctrl", `type=unixio,path=${sock}`, "--terminate"],
      { stdout: "ignore", stderr: "ignore" });
    for (let i = 0; i < 50 && !existsSync(sock); i++) await Bun.sleep(100);
    if (!existsSync(sock)) throw new Error("swtpm did not create its control socket");
    return sock;
  }

  /** ssh as root with the test's key; host keys are checked against the site's SSH CA only: nothing else is trusted. */
  async function ssh(p: number, cmd: string, timeoutMs = 60_000) {
    const knownHosts = join(dir, "known_hosts");
    writeFileSync(knownHosts, `@cert-authority * ${readFileSync(statePaths(state).sshCaPub, "utf8").trim()}\n`);
    const s = Bun.spawn(["ssh", "-p", String(p), "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
      "-o", `UserKnownHostsFile=${knownHosts}`, "-o", "GlobalKnownHostsFile=/dev/null", "-o", "HostKeyAlias=n001", "-o", "CheckHostIP=no",
      "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "root@127.0.0.1", cmd], { stdout: "pipe", stderr: "pipe" });
    const t = setTimeout(() => s.kill("SIGKILL"), timeoutMs);
    const [o, e, code] = await Promise.all([new Response(s.stdout).text(), new Response(s.stderr).text(), s.exited]);
    clearTimeout(t);
    return { out: o, err: e, code };
  }

  async function sshReady(p: number): Promise<void> {
    let last = "";
    for (let i = 0; i < 20; i++) {
      const r = await ssh(p, "true", 20_000);
      if (r.code === 0) return;
      last = r.err;
      await Bun.sleep(2000);
    }
    throw new Error(`ssh on ${p} with the host certificate failed: ${last}`);
  }

  async function waitForLogin(vm: Subprocess, box: { out: string }, ms = 400_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!/login:/.test(box.out) && Date.now() < deadline && vm.exitCode === null) await Bun.sleep(500);
    if (!/login:/.test(box.out)) throw new Error(`no login prompt on the serial console; console:\n${box.out}`);
  }

  /** "used" MiB of `free -m` on the node (RAM taken by everything, the initramfs and its copies included). */
  async function usedMiB(p: number): Promise<number> {
    const r = await ssh(p, "free -m | awk '/^Mem:/ {print $3}'");
    return Number(r.out.trim());
  }

  function startVm(append: string, sock: string, hostfwd = "") {
    const vm = Bun.spawn(["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1536", "-nographic", "-no-reboot",
      "-kernel", vmlinuz, "-initrd", initrd, "-append", `quiet airroot.rescue=poweroff ${append}`,
      "-chardev", `socket,id=chrtpm,path=${sock}`, "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0",
      "-netdev", `user,id=n0,restrict=on${hostfwd},${guestfwd}`, "-device", `virtio-net-pci,netdev=n0,mac=${MAC}`],
      { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    const box = { out: "" };
    (async () => { for await (const c of vm.stdout) box.out += new TextDecoder().decode(c).replace(/\r/g, ""); })();
    (async () => { for await (const c of vm.stderr) box.out += new TextDecoder().decode(c); })();
    return { vm, box };
  }

  test("first boot: enrolls (armed) and seals; systemd on the overlay; certified ssh on 22 and 2222; NetworkManager; /usr intact; stage reported", async () => {
    const sock = await startTpm();
    const p22 = await freePort(), p2222 = await freePort();
    const { vm, box } = startVm("", sock, `,hostfwd=tcp:127.0.0.1:${p22}-:22,hostfwd=tcp:127.0.0.1:${p2222}-:2222`);
    try {
      await waitForLogin(vm, box);
      const at = (re: RegExp) => box.out.search(re);
      expect(at(/Initializing ssh\.\.\.ssh-keygen/)).toBeGreaterThan(-1);
      expect(at(/Enrolled as n001 via https:\/\/10\.0\.2\.100 \(credential sealed in the TPM\); TPM credential locked for this boot/)).toBeGreaterThan(at(/Initializing ssh/));
      expect(at(/Mounting the root filesystem\.\.\.overlay on \/sysroot: .* via \/dev\/loop0 and \/dev\/mapper\/airroot-root \(dm-crypt\), .*\(on demand from 3 servers, verified/)).toBeGreaterThan(at(/Enrolled as/));
      expect(at(/Personalizing the new root\.\.\.done/)).toBeGreaterThan(at(/Mounting the root filesystem/));
      expect(at(/Switching root to \/sysroot/)).toBeGreaterThan(at(/Personalizing/));

      await sshReady(p22);

      const os = await ssh(p22, "grep ' / ' /proc/mounts; systemctl is-system-running --wait; nmcli -t -f NAME,DEVICE c show --active; hostname; cat /etc/machine-id; grep '^@cert-authority \\* ' /etc/ssh/ssh_known_hosts");
      expect(os.out).toMatch(/^airroot \/ overlay rw,.*lowerdir=\/mnt\/remote,upperdir=\/mnt\/overlay\/upper,workdir=\/mnt\/overlay\/work/m);
      expect(os.out).toMatch(/^(running|degraded)$/m);
      // Our keyfile connection (named as the initramfs named the NIC), matched by MAC on the boot NIC whatever the
      // booted system's udev calls it (trixie renames it to ens3 although it is up: Linux >= 6.2 allows that).
      expect(os.out).toMatch(/^eth0:(?!lo$)[a-z0-9]+$/m);
      expect(os.out).toMatch(/^n001$/m);      // host name from the server's config
      expect(os.out).toMatch(/^[0-9a-f]{32}$/m);
      expect(os.out).toContain(`@cert-authority * ${readFileSync(statePaths(state).sshCaPub, "utf8").trim()}`);
      const initramfs = await ssh(p2222, "grep ' / ' /proc/mounts");
      expect(initramfs.code).toBe(0); // the debug sshd presents its certificate too (StrictHostKeyChecking=yes)
      expect(initramfs.out).toMatch(/^rootfs \/ rootfs /m);

      // The root outlives its daemon: kill -9 of @airroot-root during a read of files never read before (page cache
      // dropped); the holder keeps the FUSE connection, the next daemon gets the requests back (FUSE_NOTIFY_RESEND).
      const st0 = await ssh(p22, "airroot status /mnt/image");
      expect(st0.out).toContain("FUSE_NOTIFY_RESEND supported");
      expect(st0.out).toMatch(/daemon restarts 0,/);
      const victim = /daemon pid (\d+) \(@airroot-root\)/.exec(st0.out)?.[1];
      if (!victim) throw new Error(`no daemon pid in airroot status:\n${st0.out}`);
      const BIG = "find usr/bin usr/lib -type f -size +1M | LC_ALL=C sort | xargs cat | sha256sum";
      const crash = await ssh(p22, `echo 3 > /proc/sys/vm/drop_caches; cd / && (${BIG} > /tmp/big.sum) & sleep 1; kill -9 ${victim}; wait; cat /tmp/big.sum`, 300_000);
      expect(crash.err).not.toMatch(/error/i);
      expect(crash.out.trim()).toBe(expectedBigSum(image, BIG));
      const st1 = await ssh(p22, "airroot status /mnt/image");
      expect(st1.out).toMatch(/daemon restarts 1,/);
      expect(/daemon pid (\d+) \(@airroot-root\)/.exec(st1.out)?.[1]).not.toBe(victim);
      // New programs start, and ssh still answers on both ports.
      const progs = await ssh(p22, "ip -V && ps --version && systemd-analyze --version && ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub");
      expect(progs.code).toBe(0);
      expect(progs.out).toMatch(/ED25519/);
      expect((await ssh(p2222, "true")).code).toBe(0);

      // The mount engine survived switch_root: with the page cache dropped, every /usr file reads back as in the image.
      const digest = await ssh(p22, `echo 3 > /proc/sys/vm/drop_caches; ${USR_DIGEST_CMD}`, 240_000);
      expect(digest.out.trim()).toBe(readFileSync(debianImagePaths().usrDigest, "utf8").trim());
      usedOnDemand = await usedMiB(p22);
      console.log(`on demand, after reading every /usr file once: ${usedOnDemand} MiB used (free -m)`);

      // airroot is on the booted system's PATH (the initramfs's binary, bind-mounted) and finds the mount engine's
      // status socket (in /run, moved into the new root); the debug sshd's environment finds it too.
      for (const p of [p22, p2222]) {
        const st = await ssh(p, "airroot status /mnt/image");
        expect(st.code).toBe(0);
        expect(st.out).toMatch(/^\/mnt\/image\/[0-9a-f]{64}\.sfs: [\d.]+ MiB/m);
        expect(st.out).toMatch(/daemon pid \d+ \(@airroot-root\)/);
        for (const ip of [SERVER_IP, ...MIRROR_IPS]) expect(st.out).toContain(`https://${ip}/images/`);
      }
      expect((await ssh(p22, "command -v airroot")).out.trim()).toBe("/usr/local/sbin/airroot");

      // The boot reporter told the server once systemd reached multi-user.target.
      let list = "";
      for (let i = 0; i < 60 && !/n001.*running/.test(list); i++) { list = node("list"); if (!/n001.*running/.test(list)) await Bun.sleep(1000); }
      expect(list).toMatch(/n001.*running \(/);
      expect(node("show", "n001")).toMatch(/stage:\s+running .*: multi-user.target reached \d+ s after switch_root/);
      // ... with a one-boot report token PID 1 got before switch_root, not with the node credential.
      const auditLog = readFileSync(statePaths(state).audit, "utf8");
      expect(auditLog).toMatch(/"event":"report-token","outcome":"ok".*"node":"n001"/);
      expect(auditLog).not.toMatch(/"event":"report","outcome":"refused"/);
      // The booted system never got the node credential: no reporter input or key on disk, the reporter is gone.
      const cred = await ssh(p22, "grep -rls 'BEGIN PRIVATE KEY' /etc /run /root /tmp /var/tmp /usr/local 2>/dev/null | grep -v -e /etc/ssh/ -e /etc/ssl/ ; pgrep -f '^@airroot-report' || echo no-reporter");
      expect(cred.out.trim()).toBe("no-reporter");
      // The image key: squashfs reads dm-crypt over the loop device; the key is in no file, no keyring and no other
      // process's memory of the booted system (dm-crypt keeps it in the kernel, the table only names it).
      const crypt = await ssh(p22, `cat /sys/block/dm-0/dm/name; ls /sys/block/dm-0/slaves; grep -c airroot: /proc/keys; ` +
        // Every file written since boot (the overlay's upper layer), /run, and the initramfs's own state directory,
        // which root here reaches through the root daemon's /proc/PID/root.
        `d=$(pgrep -f '^@airroot-root' | head -n1); grep -rl ${imageKeyHex} /run /proc/$d/root/mnt/overlay/upper /proc/$d/root/var/lib/airroot 2>/dev/null | head -3; echo ${Buffer.from(KEY_SCAN_JS).toString("base64")} | base64 -d > /tmp/scan.js && ` +
        `BUN_BE_BUN=1 /usr/local/sbin/airroot /tmp/scan.js ${imageKeyHex}`, 300_000);
      console.log(crypt.out.trim().split("\n").slice(-1)[0]);
      expect(crypt.out.trim().split("\n")).toEqual(["airroot-root", "loop0", "0", "key not found in any other process's memory or in /proc/keys"]);
      expect(crypt.code).toBe(0);

      await ssh(p22, "systemctl poweroff", 20_000);
      const code = await Promise.race([vm.exited, Bun.sleep(120_000).then(() => "still running")]);
      if (code !== 0) throw new Error(`poweroff did not finish (${code}); console tail:\n${box.out.slice(-3000)}`);
    } finally {
      vm.kill("SIGKILL");
      tpm?.kill("SIGTERM");
      await tpm?.exited;
      keepConsole("systemd-boot1.console", box.out);
    }
  }, 900_000);

  test("second boot with the same TPM, not armed: the sealed credential is reused; airroot.untether=ram: a verified copy in RAM, the loop switched to it, then no server is needed", async () => {
    expect(node("show", "n001")).toMatch(/^armed:\s+-$/m); // the first enrollment closed the window
    const sock = await startTpm();
    const p22 = await freePort();
    const { vm, box } = startVm("airroot.untether=ram", sock, `,hostfwd=tcp:127.0.0.1:${p22}-:22`);
    try {
      await waitForLogin(vm, box);
      expect(box.out).toMatch(/Using the credential sealed in the TPM: node n001 via https:\/\/10\.0\.2\.100; TPM credential locked for this boot/);
      expect(box.out).not.toMatch(/Enrolled as/);
      expect(box.out).toMatch(/Mounting the root filesystem\.\.\.overlay on \/sysroot: .*\(on demand from 3 servers, verified, @airroot-root pid \d+, untethering into RAM \(\d+ MiB of \d+ MiB free\)\)/);
      await sshReady(p22);

      // The background fill completes and the daemon switches the root's loop device to the copy in RAM.
      let st = "";
      const deadline = Date.now() + 400_000;
      while (!/^untethered: \/dev\/loop\d+ reads /m.test(st) && Date.now() < deadline) {
        await Bun.sleep(5000);
        st = (await ssh(p22, "airroot status /mnt/image")).out;
      }
      console.log(st.split("\n").filter((l) => /^(fill|untethered)/.test(l)).join("\n"));
      expect(st).toMatch(/^fill \/var\/lib\/airroot\/untether\/root\.copy: untethered, filled 100\.0%/m);
      expect(st).toMatch(/^untethered: \/dev\/loop\d+ reads \/var\/lib\/airroot\/untether\/root\.copy since .*: no image server needed$/m);
      // The local copy is the ciphertext (read through the root daemon's view of the initramfs).
      const magic = await ssh(p22, "head -c4 /proc/$(pgrep -f '^@airroot-root' | head -n1)/root/var/lib/airroot/untether/root.copy | od -An -c");
      expect(magic.code).toBe(0);
      expect(magic.out.replace(/\s+/g, "")).not.toBe("hsqs");
      // The boot reporter told the server (its token outlived "running" for this).
      let list = "";
      for (let i = 0; i < 60 && !/n001.*untethered/.test(list); i++) { list = node("list"); if (!/n001.*untethered/.test(list)) await Bun.sleep(1000); }
      expect(list).toMatch(/n001.*untethered \(/);
      expect(node("show", "n001")).toMatch(/stage:\s+untethered .*\/dev\/loop\d+ reads the local copy/);
      expect((await ssh(p22, "pgrep -f '^@airroot-report' || echo no-reporter")).out.trim()).toBe("no-reporter");

      // Every server gone: the deployment server and both mirrors. The node reads every /usr file (page cache
      // dropped) as the image holds it, starts new programs and answers ssh.
      server?.kill("SIGTERM");
      await Promise.race([server?.exited, Bun.sleep(5000)]);
      server?.kill("SIGKILL");
      for (const m of mirrors.splice(0)) await m.stop();
      // A read that hung (a server still needed) would end in the ssh timeout, and so fail.
      const digest = await ssh(p22, `echo 3 > /proc/sys/vm/drop_caches; ${USR_DIGEST_CMD}`, 300_000);
      expect(digest.code).toBe(0);
      expect(digest.out.trim()).toBe(readFileSync(debianImagePaths().usrDigest, "utf8").trim());
      const used = await usedMiB(p22);
      console.log(`untethered (copy in RAM), after reading every /usr file once: ${used} MiB used (free -m); on demand: ${usedOnDemand} MiB`);
      const progs = await ssh(p22, "ip -V && ps --version && ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub");
      expect(progs.code).toBe(0);
      await ssh(p22, "systemctl poweroff", 20_000);
      const code = await Promise.race([vm.exited, Bun.sleep(120_000).then(() => "still running")]);
      if (code !== 0) throw new Error(`poweroff did not finish (${code}); console tail:\n${box.out.slice(-3000)}`);
    } finally {
      vm.kill("SIGKILL");
      tpm?.kill("SIGTERM");
      await tpm?.exited;
      keepConsole("systemd-boot2.console", box.out);
    }
  }, 900_000);
});
