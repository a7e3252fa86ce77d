// QEMU (TCG) boots of the on-demand HTTPS root with a signed manifest and several mirrors, when mirrors misbehave:
// the first server dead from the start, a server crashed (workers included) in the middle of the boot, and a mirror
// serving a tampered copy (same size and ETag). Each boot ends in the image's own init checking the sha256 of 12 MiB
// of data files read through the mount engine after switch_root. Set AIRROOT_SKIP_VM=1 to skip (never silently).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { copyFileSync, linkSync, mkdirSync, writeFileSync } from "node:fs";
import { freePort } from "../helpers/ports";
import { makeTestPki, type TestPki } from "../helpers/pki";
import { startNginx, type Nginx } from "../helpers/nginx";
import { crashNginx } from "../helpers/crash";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { E2E_CACHE, kernelDir } from "../helpers/boot";
import { initramfsForTests } from "../helpers/initrd";
import { sshGuest, startVm, type Vm } from "../helpers/qemu";
import { makeDataRootImage, signImage, tamperedCopy, type DataImage } from "../helpers/signed-image";
import { accessLogDirective, servedFromLog } from "../helpers/access-log";

const SKIP = process.env.AIRROOT_SKIP_VM === "1";
if (SKIP) console.warn("test/e2e/failover.test.ts: skipped because AIRROOT_SKIP_VM=1");

/** Guest addresses, each forwarded by QEMU to its own nginx on loopback. */
const IP = { good0: "10.0.2.100", good1: "10.0.2.101", tampered: "10.0.2.102", dead: "10.0.2.103", crashing: "10.0.2.104" };
const url = (ip: string, file = "root.sfs") => `https://${ip}/${file}`;
const BOOT_MS = 100_000;

let dir = "", vmlinuz = "", initrd = "", clientKey = "", pki: TestPki;
let img: DataImage;
let tamperedChunks: number[] = [];
let deadPort = 0; // a loopback port where nothing listens: every guest address without a server forwards there
const servers = new Map<string, Nginx>();
const vms: { name: string; vm: Vm }[] = [];

async function serve(name: keyof typeof IP, root: string): Promise<Nginx> {
  const workDir = join(dir, `nginx-${name}`);
  mkdirSync(workDir, { recursive: true });
  const ng = await startNginx({ root, listen: [{ host: "127.0.0.1", port: await freePort("127.0.0.1") }], cert: pki.serverCert,
    key: pki.serverKey, workDir, extra: accessLogDirective(join(workDir, "access.log")) });
  servers.set(name, ng);
  return ng;
}
const portOf = (name: keyof typeof IP) => servers.get(name)!.opts.listen[0].port;
const served = (name: keyof typeof IP) => servedFromLog(join(servers.get(name)!.opts.workDir, "access.log"), "root.sfs");

/** The full boot from QEMU start to the image's init having checked its data; `extra` goes on the command line. */
function boot(name: string, imageUrls: string[], manifestIp: string, extra = "", hostfwd: { guestPort: number; hostPort: number }[] = [],
  extraArgs: string[] = []): Vm {
  const names = Object.keys(IP) as (keyof typeof IP)[];
  const guestfwd = names.map((n) => ({ guest: IP[n], hostPort: servers.has(n) ? portOf(n) : deadPort }));
  const vm = startVm({ kernel: vmlinuz, initrd, guestfwd, hostfwd, extraArgs,
    append: `quiet airroot.imageurl=${imageUrls.join(",")} airroot.manifest=${url(manifestIp, "root.manifest")} airroot.rescue=poweroff ${extra}` });
  vms.push({ name, vm });
  return vm;
}
/** What every one of these boots must show: root from N servers on demand, then every data file intact. */
function expectGoodBoot(out: string, serverCount: number): void {
  expect(out).toMatch(new RegExp(`\\] Mounting the root filesystem\\.\\.\\.overlay on /sysroot: /mnt/image/root\\.sfs via /dev/loop0, tmpfs 50% \\(on demand from ${serverCount} servers`));
  expect(out).toMatch(/AIRROOT-FO-INIT: pid 1/);
  expect(out).toMatch(/AIRROOT-FO-ROOT: airroot \/ overlay rw,.*lowerdir=\/mnt\/remote/);
  expect(out).toContain(`AIRROOT-FO-DATA: OK ${img.files.length} files`);
  expect(out).toMatch(/AIRROOT-FO-DAEMON: .*verified manifest/);
}

describe.skipIf(SKIP)("QEMU boot with failing mirrors", () => {
  beforeAll(async () => {
    dir = scratchDir("airroot-e2e-failover-");
    const kdir = kernelDir();
    vmlinuz = join(kdir, "vmlinuz");
    img = makeDataRootImage(join(dir, "img"));
    const signed = signImage(img.image, join(dir, "state"), join(dir, "img/root.manifest"));
    // Chunk 0 holds the superblock (read at loop mount), the middle one data read after switch_root.
    tamperedChunks = [0, Math.floor(signed.chunks / 2)];

    mkdirSync(join(dir, "site"));
    clientKey = join(dir, "id_ed25519");
    if (Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", clientKey]).exitCode !== 0) throw new Error("ssh-keygen failed");
    copyFileSync(`${clientKey}.pub`, join(dir, "site/authorized_keys"));
    pki = makeTestPki(join(dir, "pki"), Object.values(IP));
    copyFileSync(pki.caCert, join(dir, "site/ca.pem"));
    writeFileSync(join(dir, "site/image-key.pem"), signed.publicKeyPem);

    // Good mirrors share one copy (hard links: same inode, same ETag); the tampered one has the same size and mtime.
    for (const d of ["good", "bad"]) mkdirSync(join(dir, "www", d), { recursive: true });
    linkSync(img.image, join(dir, "www/good/root.sfs"));
    linkSync(signed.manifest, join(dir, "www/good/root.manifest"));
    tamperedCopy(img.image, join(dir, "www/bad/root.sfs"), tamperedChunks, signed.chunkSize);
    linkSync(signed.manifest, join(dir, "www/bad/root.manifest"));
    await serve("good0", join(dir, "www/good"));
    await serve("good1", join(dir, "www/good"));
    await serve("tampered", join(dir, "www/bad"));
    deadPort = await freePort("127.0.0.1");
    initrd = initramfsForTests(join(dir, "initrd.zst"), join(dir, "site"), kdir);
  }, 300_000);

  afterAll(async () => {
    for (const { name, vm } of vms) {
      vm.kill();
      // The serial consoles are kept beside the other e2e artifacts for whoever debugs a failure.
      try { writeFileSync(join(E2E_CACHE, `failover-${name}.console`), vm.output()); } catch { /* best effort */ }
    }
    for (const ng of servers.values()) { try { await crashNginx(ng); } catch { /* already gone */ } }
    removeScratchDirs();
  });

  test("the first server is dead from the start: the boot goes on with the next ones", async () => {
    const vm = boot("dead-first", [url(IP.dead), url(IP.good0), url(IP.good1)], IP.good1);
    await vm.waitFor(/AIRROOT-FO-DONE/, BOOT_MS);
    const out = vm.output();
    expectGoodBoot(out, 3);
    expect(out).toMatch(new RegExp(`AIRROOT-FO-DAEMON: .*${url(IP.dead).replace(/\./g, "\\.")}`));
    expect(served("good0").bodyBytes).toBeGreaterThan(img.size / 2); // the next listed server did the work
    expect(await Promise.race([vm.exited, Bun.sleep(20_000).then(() => "still running")])).toBe(0);
  }, 120_000);

  test("a server crashed during the boot (master and workers): reads fail over and stay correct", async () => {
    const crashing = await serve("crashing", join(dir, "www/good"));
    const vm = boot("crash-mid-boot", [url(IP.crashing), url(IP.good0)], IP.good0);
    const before = served("good0").bodyBytes;
    // Crash it as soon as it has answered a range read of the image: the root step is running, the data is not read yet.
    const deadline = Date.now() + BOOT_MS;
    while (!(served("crashing").status["206"] > 0) && Date.now() < deadline && vm.proc.exitCode === null) await Bun.sleep(20);
    const consoleAtCrash = vm.output();
    await crashNginx(crashing);
    expect(served("crashing").status["206"]).toBeGreaterThan(0);
    expect(consoleAtCrash).not.toContain("AIRROOT-FO-READING");

    await vm.waitFor(/AIRROOT-FO-DONE/, BOOT_MS);
    const out = vm.output();
    expectGoodBoot(out, 2);
    expect(out).toMatch(new RegExp(`AIRROOT-FO-DAEMON: .*error while communicating with ${url(IP.crashing).replace(/\./g, "\\.")}`));
    expect(served("good0").bodyBytes - before).toBeGreaterThan(img.size / 2); // the data came from the survivor
    expect(await Promise.race([vm.exited, Bun.sleep(20_000).then(() => "still running")])).toBe(0);
  }, 120_000);

  test("a mirror serves a tampered copy (same size and ETag): bad chunks are refused, the boot reads correct bytes", async () => {
    const port = await freePort("127.0.0.1");
    const vm = boot("tampered", [url(IP.tampered), url(IP.good1)], IP.good1, "fotest=wait", [{ guestPort: 2222, hostPort: port }]);
    try {
      await vm.waitFor(/AIRROOT-FO-DONE/, BOOT_MS);
      const out = vm.output();
      expectGoodBoot(out, 2);
      expect(out).toMatch(new RegExp(`AIRROOT-FO-DAEMON: .*${url(IP.tampered).replace(/\./g, "\\.")}.*chunk ${tamperedChunks[0]} failed verification`));
      // The daemon's status from the debug sshd, after switch_root: init binds the status sockets (which moved with
      // /run into the booted system) back into the initramfs environment's /run.
      const st = await sshGuest(port, clientKey, "airroot status --json /mnt/image", 60_000);
      expect(st.err).toBe("");
      const status = JSON.parse(st.out);
      expect(status.argv0).toBe("@airroot-root");
      expect(status.verified.badChunks).toBeGreaterThan(0);
      const bad = status.image.sources.find((s: { url: string }) => s.url === url(IP.tampered));
      expect(bad.lastError).toMatch(/chunk \d+ failed verification/);
      expect(bad.state).not.toBe("healthy");
      const good = status.image.sources.find((s: { url: string }) => s.url === url(IP.good1));
      expect(good.bytes).toBeGreaterThan(0);
    } finally {
      vm.kill();
    }
  }, 120_000);
  test("airroot.untether=disk:/dev/vda: the verified copy fills a virtio disk, the loop device switches to it, then with every server gone the data reads back right", async () => {
    const port = await freePort("127.0.0.1");
    const disk = join(dir, "local-disk.img");
    // A local disk larger than the image, with old contents (the copy overwrites what it needs, the loop is capped).
    writeFileSync(disk, Buffer.alloc(img.size + 4 * 1048576, 0x5a));
    const vm = boot("untether-disk", [url(IP.good0), url(IP.good1)], IP.good0, "airroot.untether=disk:/dev/vda fotest=wait",
      [{ guestPort: 2222, hostPort: port }], ["-drive", `file=${disk},if=virtio,format=raw,cache=none`]);
    try {
      await vm.waitFor(/AIRROOT-FO-DONE/, BOOT_MS);
      const out = vm.output();
      expectGoodBoot(out, 2);
      expect(out).toMatch(/\(on demand from 2 servers, verified, @airroot-root pid \d+, untethering into \/dev\/vda \(\d+ MiB of its \d+ MiB\)\)/);
      let st = "";
      for (let i = 0; i < 30 && !/^untethered: /m.test(st); i++) {
        st = (await sshGuest(port, clientKey, "airroot status /mnt/image", 30_000)).out;
        if (!/^untethered: /m.test(st)) await Bun.sleep(2000);
      }
      console.log(st.split("\n").filter((l) => /^(fill|untethered)/.test(l)).join("\n"));
      expect(st).toMatch(/^fill \/dev\/vda: untethered, filled 100\.0%/m);
      expect(st).toMatch(/^untethered: \/dev\/loop0 reads \/dev\/vda since .*: no image server needed$/m);
      // No server at all from now on; the page cache dropped, every data file is read again, from the disk.
      for (const n of ["good0", "good1"] as const) await crashNginx(servers.get(n)!);
      const check = await sshGuest(port, clientKey,
        "echo 3 > /proc/sys/vm/drop_caches; cat /sys/block/loop0/loop/backing_file; timeout 60 chroot /mnt/remote sha256sum -c /etc/airroot-data.sha256 | grep -c ': OK$'", 90_000);
      expect(check.out.trim().split("\n")).toEqual(["/dev/vda", String(img.files.length)]);
    } finally {
      vm.kill();
    }
    // What the disk holds: the image, byte for byte, then the old contents past its end.
    const got = Bun.file(disk);
    const want = new Bun.CryptoHasher("sha256").update(await Bun.file(img.image).arrayBuffer()).digest("hex");
    expect(new Bun.CryptoHasher("sha256").update(await got.slice(0, img.size).arrayBuffer()).digest("hex")).toBe(want);
    expect(Buffer.from(await got.slice(img.size, img.size + 16).arrayBuffer())).toEqual(Buffer.alloc(16, 0x5a));
  }, 180_000);
});
