// UEFI HTTP boot in QEMU (TCG), inside a network namespace the test made: OVMF (Debian's ovmf, its own virtio-net
// driver, PXE switched off through fw_cfg so only HTTP boot is tried) on a tap device in that namespace; a real
// dnsmasq there running exactly the configuration `airroot serve dhcp-config dnsmasq` printed; `airroot serve` there
// on the tap's address (HTTPS on 443, plain HTTP on 80). The firmware sends vendor class HTTPClient, gets option 60
// echoed and the URL of snponly.efi, loads iPXE over HTTP; iPXE (user class iPXE) gets the script URL, chains to the
// per-node script, loads the kernel (EFI stub) and initramfs over HTTP; airroot init enrolls and switches into
// systemd. Checked: enrolled, overlay root, ssh on 22 and 2222 with host certificates, the boot reported running.
// Then UEFI PXE with the same dnsmasq (arch 7 -> snponly.efi over dnsmasq's TFTP), as far as the kernel loading.
// Then UEFI HTTP boot with Secure Boot enforcing straight into a signed UKI (`media uki`, `serve boot-files --uki`,
// dnsmasq from `dhcp-config --http-boot uki`; OVMF's secboot code with Debian's snakeoil key enrolled as the site key):
// the firmware checks the UKI's signature, its first stage fetches the initramfs over HTTPS and checks its digest,
// and the node boots into systemd with Secure Boot on and the kernel in lockdown.
// Then UEFI HTTP boot with Secure Boot enforcing and only Microsoft's keys (OVMF's stock "ms" vars), through Debian
// 13's signed shim and network GRUB (`serve boot-files --shim --grub`, dnsmasq from `dhcp-config --http-boot shim`):
// shim over HTTP, GRUB from beside it, /grub/grub.cfg and the per-node GRUB config from airroot serve, Debian's
// signed kernel and the initramfs over HTTP; systemd with Secure Boot on and the kernel in lockdown.
// Then UEFI PXE with Secure Boot enforcing and Microsoft's keys (`dhcp-config --efi shimx64.efi`): shim and GRUB
// over dnsmasq's TFTP, grub/grub.cfg from the TFTP root sending GRUB on to the per-node GRUB config over HTTP, as
// far as airroot init enrolling under the kernel shim and GRUB checked.
// Last, UEFI HTTP boot of the FAT image (`media img`, `serve boot-files --img`, `dhcp-config --http-boot img`): the
// firmware mounts it as a RAM disk (Content-Type application/vnd.efi-img) and boots its GRUB, kernel and initramfs,
// as far as airroot enrolling and mounting the root.
// Nothing leaves the namespace: no route out, the VM's only link is the tap. One VM at a time (/tmp/airroot-qemu.lock).
// Set AIRROOT_SKIP_VM=1 to skip (never skipped silently).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { copyFileSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { Subprocess } from "bun";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { buildTestInitramfs, E2E_CACHE, kernelDir, privateAirroot, signedBootDir } from "../helpers/boot";
import { debianImage } from "../helpers/debian-image";
import { certifiedSsh, collectConsole, qemuLock, startQemuTpm, tpmArgs } from "../helpers/vm-node";
import { buildTestStage1, OVMF_CODE, OVMF_CODE_SECBOOT, OVMF_VARS, OVMF_VARS_MS, SNAKEOIL_CERT, SNAKEOIL_KEY, SNAKEOIL_VARS } from "../helpers/media";
import { readConfig, statePaths, writeConfig } from "../../src/server/state";

const SKIP = process.env.AIRROOT_SKIP_VM === "1";
if (SKIP) console.warn("test/e2e/pxe-uefi-http.test.ts: skipped because AIRROOT_SKIP_VM=1");

const MAC = "52:54:00:12:34:58";
const UKI_MAC = "52:54:00:12:34:5a";
const PXE_MAC = "52:54:00:12:34:59";
const SHIM_MAC = "52:54:00:12:34:5b";
const IMG_MAC = "52:54:00:12:34:5c";
const SHIM_PXE_MAC = "52:54:00:12:34:5d";

function sh(args: string[]): string {
  const r = Bun.spawnSync(args, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${args.join(" ")}: ${r.stderr.toString()}${r.stdout.toString()}`);
  return r.stdout.toString();
}

describe.skipIf(SKIP)("UEFI HTTP boot: OVMF -> dnsmasq from `serve dhcp-config` -> snponly.efi over HTTP -> iPXE script -> systemd", () => {
  let dir = "", key = "", state = "", airroot = "", ns = "";
  const n = 1 + Math.floor(Math.random() * 250);
  const SERVER_IP = `10.214.${n}.1`;
  let server: Subprocess | undefined, dnsmasq: Subprocess | undefined;
  let dnsmasqLog = { out: "" };
  let kdir = "", initrd = "";
  const node = (...args: string[]) => sh([airroot, "node", ...args, "--state", state]);
  const inNs = (cmd: string[]) => ["ip", "netns", "exec", ns, ...cmd];

  beforeAll(async () => {
    dir = scratchDir("airroot-e2e-uefi-http-");
    const image = debianImage();
    airroot = privateAirroot();
    state = join(dir, "state");
    key = join(dir, "id");
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key]);
    sh([airroot, "serve", "init", "--state", state, "--address", SERVER_IP]);
    writeConfig(state, { ...readConfig(state), rootAuthorizedKeys: [readFileSync(`${key}.pub`, "utf8").trim()] });
    sh([airroot, "serve", "config", "set", "http-port", "80", "--state", state]);
    sh([airroot, "serve", "config", "set", "boot-cmdline", "console=ttyS0 quiet airroot.rescue=poweroff", "--state", state]);
    const tree = join(dir, "tree");
    sh(["unsquashfs", "-q", "-n", "-d", tree, image]);
    sh([airroot, "image", "pack", tree, "--state", state, "--profile", "compute"]);
    rmSync(tree, { recursive: true, force: true });
    node("add", "n002", "--mac", MAC, "--profile", "compute");
    node("arm", "n002", "--once");
    node("add", "n003", "--mac", PXE_MAC, "--profile", "compute");
    node("add", "n004", "--mac", UKI_MAC, "--profile", "compute");
    node("arm", "n004", "--once");
    node("add", "n005", "--mac", SHIM_MAC, "--profile", "compute");
    node("arm", "n005", "--once");
    node("add", "n006", "--mac", IMG_MAC, "--profile", "compute");
    node("arm", "n006", "--once");
    node("add", "n007", "--mac", SHIM_PXE_MAC, "--profile", "compute");
    node("arm", "n007", "--once");
    sh([airroot, "serve", "site-config", "--state", state, "--out", join(dir, "site")]);
    kdir = kernelDir();
    initrd = buildTestInitramfs(join(dir, "initrd.zst"), [], kdir, join(dir, "site"));
    sh([airroot, "serve", "boot-files", "--state", state, "--kernel", join(kdir, "vmlinuz"), "--initrd", initrd]);

    // The namespace: loopback and one tap for the VM, nothing else (no route anywhere outside).
    ns = `ar-uefi-${process.pid}`;
    sh(["ip", "netns", "add", ns]);
    sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
    sh(["ip", "-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap"]);
    sh(["ip", "-n", ns, "addr", "add", `${SERVER_IP}/24`, "dev", "tap0"]);
    sh(["ip", "-n", ns, "link", "set", "tap0", "up"]);

    server = Bun.spawn(inNs([airroot, "serve", "--state", state, "--listen", `${SERVER_IP}:443`, "--http-listen", `${SERVER_IP}:80`, "--no-discovery"]),
      { stdout: "ignore", stderr: "pipe" });
    let up = false;
    for (let i = 0; i < 100 && !up; i++) {
      up = Bun.spawnSync(inNs(["nc", "-z", SERVER_IP, "80"])).exitCode === 0;
      if (!up) await Bun.sleep(200);
    }
    if (!up) throw new Error("airroot serve did not listen on :80 in its namespace within 20 s");

    const conf = await startDnsmasq([]);
    expect(conf).toContain(`dhcp-boot=tag:httpclient,tag:!ipxe,http://${SERVER_IP}/boot/snponly.efi`);
  }, 600_000);

  /** dnsmasq with the configuration `serve dhcp-config dnsmasq ...extra` printed, as is (root: the TFTP root is inside the 0700 state dir). */
  async function startDnsmasq(extra: string[]): Promise<string> {
    if (dnsmasq) {
      dnsmasq.kill("SIGTERM");
      await Promise.race([dnsmasq.exited, Bun.sleep(5000)]);
      dnsmasq.kill("SIGKILL");
      await dnsmasq.exited;
    }
    const conf = sh([airroot, "serve", "dhcp-config", "dnsmasq", "--state", state, "--range", `10.214.${n}.50,10.214.${n}.150,255.255.255.0,1h`, "--interface", "tap0", ...extra]);
    writeFileSync(join(dir, "dnsmasq.conf"), conf);
    dnsmasq = Bun.spawn(inNs(["dnsmasq", "--keep-in-foreground", "--log-facility=-", `--conf-file=${join(dir, "dnsmasq.conf")}`,
      `--dhcp-leasefile=${join(dir, "leases")}`, `--pid-file=${join(dir, "dnsmasq.pid")}`, "--user=root", "--group=root"]),
    { stdout: "pipe", stderr: "pipe" });
    dnsmasqLog = collectConsole(dnsmasq);
    for (let i = 0; i < 50 && !/started, version/.test(dnsmasqLog.out) && dnsmasq.exitCode === null; i++) await Bun.sleep(100);
    if (!/started, version/.test(dnsmasqLog.out)) throw new Error(`dnsmasq did not start: ${dnsmasqLog.out}`);
    return conf;
  }

  afterAll(async () => {
    for (const p of [dnsmasq, server]) {
      p?.kill("SIGTERM");
      await Promise.race([p?.exited, Bun.sleep(5000)]);
      p?.kill("SIGKILL");
    }
    try { writeFileSync(join(E2E_CACHE, "pxe-uefi-http.dnsmasq.log"), dnsmasqLog.out); } catch {}
    if (ns) Bun.spawnSync(["ip", "netns", "del", ns]);
    removeScratchDirs();
  });

  /**
   * Runs `body` with OVMF booting from the namespace's tap (PXE off unless `pxe`; Secure Boot: the secboot code, SMM
   * and the given vars), under the QEMU lock, with a TPM when asked; always cleans up and keeps the console.
   */
  async function uefiBoot(o: { name: string; mac: string; vars: string; secureBoot?: boolean; tpm?: boolean; pxe?: boolean },
    body: (vm: Subprocess<"pipe", "pipe", "pipe">, box: { out: string }) => Promise<void>): Promise<void> {
    const lock = await qemuLock();
    // One TPM per machine: a second machine with the first one's TPM would unseal that node's credential.
    const tpm = o.tpm ? await startQemuTpm(join(dir, `tpm-${o.mac.replace(/:/g, "")}`)) : undefined;
    const vars = join(dir, `OVMF_VARS-${o.name}.fd`);
    copyFileSync(o.vars, vars);
    const machine = o.secureBoot
      ? ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]
      : ["-machine", "q35"];
    const vm = Bun.spawn(inNs(["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", o.tpm ? "1536" : "1024", ...machine, "-nographic", "-no-reboot",
      "-drive", `if=pflash,format=raw,unit=0,readonly=on,file=${o.secureBoot ? OVMF_CODE_SECBOOT : OVMF_CODE}`, "-drive", `if=pflash,format=raw,unit=1,file=${vars}`,
      ...(o.pxe ? [] : ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n"]), "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n",
      ...(tpm ? tpmArgs(tpm.sock) : []),
      "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no", "-device", `virtio-net-pci,netdev=n0,mac=${o.mac},romfile=`]),
    { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    const box = collectConsole(vm);
    try {
      await body(vm, box);
    } finally {
      vm.kill("SIGKILL");
      await vm.exited;
      await tpm?.stop();
      await lock.release();
      try { writeFileSync(join(E2E_CACHE, `pxe-uefi-${o.name}.console`), box.out); } catch {}
    }
  }

  /** Waits for the login prompt on the console (or fails with the console and dnsmasq's log). */
  async function waitForLogin(vm: Subprocess, box: { out: string }, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (!/login:/.test(box.out) && Date.now() < deadline && vm.exitCode === null) await Bun.sleep(500);
    if (!/login:/.test(box.out)) throw new Error(`no login prompt on the serial console; console:\n${box.out}\ndnsmasq:\n${dnsmasqLog.out}`);
  }

  /**
   * Certified ssh (host certificate checked against the SSH CA) to the address dnsmasq leased to `mac`, from inside the
   * namespace through loopback relays, once port 22 answers; `body` gets it and the relayed ports.
   */
  async function withLeasedSsh(mac: string, alias: string,
    body: (ssh: ReturnType<typeof certifiedSsh>, p22: number, p2222: number) => Promise<void>): Promise<void> {
    const lease = readFileSync(join(dir, "leases"), "utf8").split("\n").find((l) => l.includes(mac));
    const ip = lease?.split(" ")[2];
    if (!ip) throw new Error(`no lease for ${mac}: ${readFileSync(join(dir, "leases"), "utf8")}`);
    const fwd22 = await nsForward(ns, ip, 22), fwd2222 = await nsForward(ns, ip, 2222);
    try {
      const ssh = certifiedSsh(dir, readFileSync(statePaths(state).sshCaPub, "utf8"), key, alias);
      let ok = false, last = "";
      for (let i = 0; i < 20 && !ok; i++) {
        const r = await ssh(fwd22.port, "true", 20_000);
        ok = r.code === 0; last = r.err;
        if (!ok) await Bun.sleep(2000);
      }
      if (!ok) throw new Error(`ssh on 22 with the host certificate failed: ${last}`);
      await body(ssh, fwd22.port, fwd2222.port);
    } finally { fwd22.stop(); fwd2222.stop(); }
  }

  /** `systemctl poweroff` over ssh, then QEMU must exit 0 within 2 minutes. */
  async function powerOff(ssh: ReturnType<typeof certifiedSsh>, p22: number, vm: Subprocess, box: { out: string }): Promise<void> {
    await ssh(p22, "systemctl poweroff", 20_000);
    const code = await Promise.race([vm.exited, Bun.sleep(120_000).then(() => "still running")]);
    if (code !== 0) throw new Error(`poweroff did not finish (${code}); console tail:\n${box.out.slice(-3000)}`);
  }

  test("power-on to systemd through UEFI HTTP boot: enrolled, overlay root, certified ssh on 22 and 2222, reported running", async () => {
    await uefiBoot({ name: "http", mac: MAC, vars: OVMF_VARS, tpm: true }, async (vm, box) => {
      await waitForLogin(vm, box, 480_000);
      // dnsmasq saw the firmware's HTTP boot request and then iPXE's, and answered each with its own file.
      const ipRe = SERVER_IP.replace(/\./g, "\\.");
      expect(dnsmasqLog.out).toMatch(/vendor class: HTTPClient:Arch:00016/);
      expect(dnsmasqLog.out).toMatch(new RegExp(`option: 67 bootfile-name +http://${ipRe}/boot/snponly\\.efi\n`));
      expect(dnsmasqLog.out).toMatch(/option: 60 vendor-class +48:54:54:50:43:6c:69:65:6e:74\n/); // "HTTPClient" echoed back
      expect(dnsmasqLog.out).toMatch(/user class: iPXE/);
      expect(dnsmasqLog.out).toMatch(new RegExp(`option: 67 bootfile-name +http://${ipRe}/boot/ipxe\n`));
      expect(box.out).toMatch(/Start HTTP Boot over IPv4/);
      expect(box.out).toMatch(new RegExp(`URI: http://${ipRe}/boot/snponly\\.efi`));
      const audit = readFileSync(statePaths(state).audit, "utf8");
      expect(audit).toMatch(/"event":"boot-script","outcome":"ok","remote":"10\.214\.\d+\.\d+","node":"n002","reason":"per-node iPXE script over http, MAC 52:54:00:12:34:58"/);
      const at = (re: RegExp) => box.out.search(re);
      expect(at(/airroot: booting n002 from http:\/\/10\.214\./)).toBeGreaterThan(-1);
      expect(at(/Enrolled as n002 via https:\/\/10\.214\.\d+\.1 \(credential sealed in the TPM\)/)).toBeGreaterThan(at(/airroot: booting n002/));
      expect(at(/Mounting the root filesystem\.\.\.overlay on \/sysroot: /)).toBeGreaterThan(at(/Enrolled as/));

      await withLeasedSsh(MAC, "n002", async (ssh, p22, p2222) => {
        const os = await ssh(p22, "grep ' / ' /proc/mounts; systemctl is-system-running --wait; hostname; cat /proc/cmdline; ls -d /sys/firmware/efi");
        expect(os.out).toMatch(/^airroot \/ overlay rw,.*lowerdir=\/mnt\/remote,upperdir=\/mnt\/overlay\/upper/m);
        expect(os.out).toMatch(/^(running|degraded)$/m);
        expect(os.out).toMatch(/^n002$/m);
        // The EFI stub shows the image name first.
        expect(os.out).toMatch(/^vmlinuz initrd=initramfs console=ttyS0 quiet airroot\.rescue=poweroff airroot\.server=https:\/\/10\.214\.\d+\.1$/m);
        expect(os.out).toMatch(/^\/sys\/firmware\/efi$/m); // booted through UEFI
        const initramfs = await ssh(p2222, "grep ' / ' /proc/mounts");
        expect(initramfs.code).toBe(0);
        expect(initramfs.out).toMatch(/^rootfs \/ rootfs /m);
        let list = "";
        for (let i = 0; i < 60 && !/n002.*running/.test(list); i++) { list = node("list"); if (!/n002.*running/.test(list)) await Bun.sleep(1000); }
        expect(list).toMatch(/n002.*running \(/);
        await powerOff(ssh, p22, vm, box);
      });
    });
  }, 720_000);

  test("UEFI PXE (arch 7) with the same configuration: snponly.efi over dnsmasq's TFTP, then the per-node script and the kernel over HTTP", async () => {
    await uefiBoot({ name: "pxe", mac: PXE_MAC, vars: OVMF_VARS, pxe: true }, async (vm, box) => {
      const want = /http:\/\/10\.214\.\d+\.1\/boot\/vmlinuz\.\.\. ok/;
      const deadline = Date.now() + 240_000;
      while (!want.test(box.out) && Date.now() < deadline && vm.exitCode === null) await Bun.sleep(500);
      if (!want.test(box.out)) throw new Error(`the kernel was not loaded; console:\n${box.out}\ndnsmasq:\n${dnsmasqLog.out}`);
      expect(box.out).toMatch(/Start PXE over IPv4/);
      expect(box.out).toMatch(/airroot: booting n003 from http:\/\/10\.214\./);
      expect(dnsmasqLog.out).toMatch(/vendor class: PXEClient:Arch:00007/);
      expect(dnsmasqLog.out).toMatch(/option: 67 bootfile-name +snponly\.efi\n/);
      expect(dnsmasqLog.out).toMatch(/dnsmasq-tftp\[\d+\]: sent \S+\/boot\/snponly\.efi to 10\.214\./);
    });
  }, 300_000);

  test("UEFI HTTP boot with Secure Boot enforcing, straight into the signed UKI: first stage, initramfs over HTTPS, systemd with Secure Boot on", async () => {
    // The site's Secure Boot key: Debian's snakeoil key, which OVMF's snakeoil vars hold in db.
    const dbKey = join(dir, "db.key");
    sh(["openssl", "pkey", "-in", SNAKEOIL_KEY, "-passin", "pass:snakeoil", "-out", dbKey]);
    const uki = join(dir, "airroot.efi");
    sh([airroot, "media", "uki", "--key", dbKey, "--cert", SNAKEOIL_CERT, "--site", join(dir, "site"), "--kernel", join(kdir, "vmlinuz"),
      "--initrd", initrd, "--stage1", buildTestStage1(join(dir, "stage1.zst"), kdir),
      "--cmdline", "console=ttyS0 airroot.rescue=poweroff airroot.modules=efivarfs", "--out", uki]);
    expect(sh([airroot, "serve", "boot-files", "--state", state, "--uki", uki])).toMatch(/^installed airroot\.efi /m);
    const conf = await startDnsmasq(["--http-boot", "uki"]);
    expect(conf).toContain(`dhcp-boot=tag:httpclient,tag:!ipxe,http://${SERVER_IP}/boot/airroot.efi`);

    await uefiBoot({ name: "uki", mac: UKI_MAC, vars: SNAKEOIL_VARS, secureBoot: true, tpm: true }, async (vm, box) => {
      await waitForLogin(vm, box, 600_000);
      const ipRe = SERVER_IP.replace(/\./g, "\\.");
      const at = (re: RegExp) => box.out.search(re);
      expect(dnsmasqLog.out).toMatch(new RegExp(`option: 67 bootfile-name +http://${ipRe}/boot/airroot\\.efi\n`));
      expect(at(new RegExp(`URI: http://${ipRe}/boot/airroot\\.efi`))).toBeGreaterThan(-1);
      // The firmware ran it only because its signature checks against db; the kernel confirms Secure Boot.
      expect(at(/EFI stub: UEFI Secure Boot is enabled\./)).toBeGreaterThan(at(/URI: http:/));
      expect(at(/Kernel is locked down from EFI Secure Boot/)).toBeGreaterThan(-1);
      expect(at(/airroot media: fetched https:\/\/10\.214\.\d+\.1\/boot\/initramfs in [\d.]+ s, sha256 verified/)).toBeGreaterThan(at(/EFI stub/));
      expect(at(/Enrolled as n004 via https:\/\/10\.214\.\d+\.1 \(credential sealed in the TPM\)/)).toBeGreaterThan(at(/sha256 verified/));
      expect(at(/Mounting the root filesystem\.\.\.overlay on \/sysroot: /)).toBeGreaterThan(at(/Enrolled as/));
      await withLeasedSsh(UKI_MAC, "n004", async (ssh, p22) => {
        const os = await ssh(p22, "grep ' / ' /proc/mounts; systemctl is-system-running --wait; hostname; " +
          "od -An -tu1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c; cat /sys/kernel/security/lockdown");
        expect(os.out).toMatch(/^airroot \/ overlay rw,.*lowerdir=\/mnt\/remote/m);
        expect(os.out).toMatch(/^(running|degraded)$/m);
        expect(os.out).toMatch(/^n004$/m);
        expect(os.out).toMatch(/^\s*6\s+0\s+0\s+0\s+1\s*$/m); // SecureBoot: attributes (4 bytes), then 1 = enabled
        expect(os.out).toMatch(/\[integrity\]/);
        await powerOff(ssh, p22, vm, box);
      });
    });
  }, 900_000);

  test("UEFI HTTP boot with Secure Boot enforcing and Microsoft's keys: Debian's signed shim -> signed GRUB -> per-node GRUB config -> signed kernel -> systemd", async () => {
    const sb = signedBootDir();
    expect(sh([airroot, "serve", "boot-files", "--state", state, "--shim", join(sb, "shimx64.efi"), "--grub", join(sb, "grubx64.efi")]))
      .toMatch(/^installed grubx64\.efi /m);
    const conf = await startDnsmasq(["--http-boot", "shim"]);
    expect(conf).toContain(`dhcp-boot=tag:httpclient,tag:!ipxe,http://${SERVER_IP}/boot/shimx64.efi`);
    // efivarfs is a module in Debian 13's kernel and the image has no modprobe: init loads it (as in the UKI boot).
    sh([airroot, "serve", "config", "set", "boot-cmdline", "console=ttyS0 quiet airroot.rescue=poweroff airroot.modules=efivarfs", "--state", state]);
    await Bun.sleep(1500); // the running server picks the change up within its config check (100 ms)

    await uefiBoot({ name: "shim", mac: SHIM_MAC, vars: OVMF_VARS_MS, secureBoot: true, tpm: true }, async (vm, box) => {
      await waitForLogin(vm, box, 600_000);
      const ipRe = SERVER_IP.replace(/\./g, "\\.");
      const at = (re: RegExp) => box.out.search(re);
      expect(dnsmasqLog.out).toMatch(new RegExp(`option: 67 bootfile-name +http://${ipRe}/boot/shimx64\\.efi\n`));
      expect(at(new RegExp(`URI: http://${ipRe}/boot/shimx64\\.efi`))).toBeGreaterThan(-1);
      // GRUB ran the per-node config airroot serve made from n005's record, then the kernel under lockdown.
      expect(at(/airroot: booting n005 from http:\/\/10\.214\./)).toBeGreaterThan(at(/URI: http:/));
      // (boot-cmdline has `quiet`: the kernel's lockdown line is checked on the node below.)
      expect(at(/Enrolled as n005 via https:\/\/10\.214\.\d+\.1 \(credential sealed in the TPM\)/)).toBeGreaterThan(at(/airroot: booting n005/));
      expect(at(/Mounting the root filesystem\.\.\.overlay on \/sysroot: /)).toBeGreaterThan(at(/Enrolled as/));
      const audit = readFileSync(statePaths(state).audit, "utf8");
      expect(audit).toMatch(/"event":"boot-script","outcome":"ok","remote":"10\.214\.\d+\.\d+","node":"n005","reason":"per-node GRUB script over http, MAC 52:54:00:12:34:5b"/);
      await withLeasedSsh(SHIM_MAC, "n005", async (ssh, p22, p2222) => {
        const os = await ssh(p22, "grep ' / ' /proc/mounts; systemctl is-system-running --wait; hostname; cat /proc/cmdline; " +
          "mountpoint -q /sys/firmware/efi/efivars || mount -t efivarfs efivarfs /sys/firmware/efi/efivars; " +
          "od -An -tu1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c 2>&1; cat /sys/kernel/security/lockdown; " +
          "dmesg | grep -o 'secureboot: Secure boot enabled'");
        expect(os.out).toMatch(/^airroot \/ overlay rw,.*lowerdir=\/mnt\/remote/m);
        expect(os.out).toMatch(/^(running|degraded)$/m);
        expect(os.out).toMatch(/^n005$/m);
        expect(os.out).toMatch(/^secureboot: Secure boot enabled$/m);
        expect(os.out).toMatch(/^BOOT_IMAGE=\/boot\/vmlinuz console=ttyS0 quiet airroot\.rescue=poweroff airroot\.modules=efivarfs airroot\.server=https:\/\/10\.214\.\d+\.1$/m);
        expect(os.out).toMatch(/^\s*6\s+0\s+0\s+0\s+1\s*$/m); // SecureBoot: attributes (4 bytes), then 1 = enabled
        expect(os.out).toMatch(/\[integrity\]/);
        expect((await ssh(p2222, "grep ' / ' /proc/mounts")).out).toMatch(/^rootfs \/ rootfs /m);
        await powerOff(ssh, p22, vm, box);
      });
    });
  }, 900_000);

  test("UEFI PXE with Secure Boot enforcing and Microsoft's keys: shim and GRUB over TFTP, grub/grub.cfg from the TFTP root -> per-node GRUB config over HTTP -> signed kernel", async () => {
    const sb = signedBootDir();
    sh([airroot, "serve", "boot-files", "--state", state, "--shim", join(sb, "shimx64.efi"), "--grub", join(sb, "grubx64.efi")]);
    const conf = await startDnsmasq(["--efi", "shimx64.efi"]);
    expect(conf).toContain("dhcp-boot=tag:efi64,tag:!httpclient,tag:!ipxe,shimx64.efi");
    await uefiBoot({ name: "shim-pxe", mac: SHIM_PXE_MAC, vars: OVMF_VARS_MS, secureBoot: true, pxe: true, tpm: true }, async (vm, box) => {
      // airroot init enrolling shows the initramfs ran under the kernel that shim and GRUB checked.
      const want = /Enrolled as n007 via https:\/\/10\.214\.\d+\.1 \(credential sealed in the TPM\)/;
      const deadline = Date.now() + 360_000;
      while (!want.test(box.out) && Date.now() < deadline && vm.exitCode === null) await Bun.sleep(500);
      if (!want.test(box.out)) throw new Error(`no enrollment through shim and GRUB over PXE; console:\n${box.out}\ndnsmasq:\n${dnsmasqLog.out}`);
      const at = (re: RegExp) => box.out.search(re);
      expect(at(/Start PXE over IPv4/)).toBeGreaterThan(-1);
      expect(dnsmasqLog.out).toMatch(/dnsmasq-tftp\[\d+\]: sent \S+\/boot\/shimx64\.efi to 10\.214\./);
      expect(dnsmasqLog.out).toMatch(/dnsmasq-tftp\[\d+\]: sent \S+\/boot\/grubx64\.efi to 10\.214\./);
      expect(dnsmasqLog.out).toMatch(/dnsmasq-tftp\[\d+\]: sent \S+\/boot\/grub\/grub\.cfg to 10\.214\./);
      expect(at(/airroot: booting n007 from http:\/\/10\.214\./)).toBeGreaterThan(at(/Start PXE over IPv4/));
      expect(at(want)).toBeGreaterThan(at(/airroot: booting n007/));
      const audit = readFileSync(statePaths(state).audit, "utf8");
      expect(audit).toMatch(/"event":"boot-script","outcome":"ok","remote":"10\.214\.\d+\.\d+","node":"n007","reason":"per-node GRUB script over http, MAC 52:54:00:12:34:5d"/);
    });
  }, 420_000);

  test("UEFI HTTP boot of the FAT image (media img): mounted as a RAM disk by the firmware, its GRUB boots the kernel and initramfs, airroot enrolls", async () => {
    const img = join(dir, "boot.img");
    sh([airroot, "media", "img", "--site", join(dir, "site"), "--kernel", join(kdir, "vmlinuz"), "--initrd", initrd,
      "--cmdline", "console=ttyS0 airroot.rescue=poweroff", "--out", img]);
    expect(sh([airroot, "serve", "boot-files", "--state", state, "--img", img])).toMatch(/^installed boot\.img /m);
    const conf = await startDnsmasq(["--http-boot", "img"]);
    expect(conf).toContain(`dhcp-boot=tag:httpclient,tag:!ipxe,http://${SERVER_IP}/boot/boot.img`);
    await uefiBoot({ name: "img", mac: IMG_MAC, vars: OVMF_VARS, tpm: true }, async (vm, box) => {
      const want = /Mounting the root filesystem\.\.\.overlay on \/sysroot: /;
      const deadline = Date.now() + 420_000;
      while (!want.test(box.out) && Date.now() < deadline && vm.exitCode === null) await Bun.sleep(500);
      if (!want.test(box.out)) throw new Error(`the FAT image over HTTP boot did not get to the root mount; console:\n${box.out}\ndnsmasq:\n${dnsmasqLog.out}`);
      const ipRe = SERVER_IP.replace(/\./g, "\\.");
      const at = (re: RegExp) => box.out.search(re);
      expect(at(new RegExp(`URI: http://${ipRe}/boot/boot\\.img`))).toBeGreaterThan(-1);
      expect(at(/airroot: loading \/boot\/vmlinuz and \/boot\/initramfs\.img \/boot\/site\.cpio/)).toBeGreaterThan(at(/URI: http:/));
      expect(at(/Enrolled as n006 via https:\/\/10\.214\.\d+\.1 \(credential sealed in the TPM\)/)).toBeGreaterThan(at(/airroot: loading/));
      expect(at(want)).toBeGreaterThan(at(/Enrolled as n006/));
    });
  }, 600_000);
});

/**
 * A loopback port on this host that reaches ip:port inside the namespace: a tiny relay that runs `ip netns exec NS
 * nc IP PORT` per connection (like QEMU's guestfwd), so ssh runs here with the test's key and known_hosts.
 */
async function nsForward(ns: string, ip: string, port: number): Promise<{ port: number; stop(): void }> {
  const net = await import("node:net");
  const procs = new Set<Subprocess>();
  const srv = net.createServer((c) => {
    const p = Bun.spawn(["ip", "netns", "exec", ns, "nc", "-N", ip, String(port)], { stdin: "pipe", stdout: "pipe", stderr: "ignore" });
    procs.add(p);
    c.on("data", (d) => { try { p.stdin.write(d); p.stdin.flush(); } catch {} });
    c.on("end", () => { try { p.stdin.end(); } catch {} });
    c.on("error", () => p.kill("SIGKILL"));
    c.on("close", () => p.kill("SIGKILL"));
    (async () => { try { for await (const d of p.stdout) c.write(d); } catch {} c.end(); })();
    p.exited.then(() => { procs.delete(p); c.end(); });
  });
  await new Promise<void>((ok) => srv.listen(0, "127.0.0.1", () => ok()));
  const a = srv.address();
  return { port: typeof a === "object" && a ? a.port : 0, stop() { srv.close(); for (const p of procs) p.kill("SIGKILL"); } };
}
