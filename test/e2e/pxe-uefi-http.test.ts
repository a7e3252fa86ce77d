// UEFI HTTP boot in QEMU (TCG), inside a network namespace the test made: OVMF (Debian's ovmf, its own virtio-net
// driver, PXE switched off through fw_cfg so only HTTP boot is tried) on a tap device in that namespace; a real
// dnsmasq there running exactly the configuration `airroot serve dhcp-config dnsmasq` printed; `airroot serve` there
// on the tap's address (HTTPS on 443, plain HTTP on 80). The firmware sends vendor class HTTPClient, gets option 60
// echoed and the URL of snponly.efi, loads iPXE over HTTP; iPXE (user class iPXE) gets the script URL, chains to the
// per-node script, loads the kernel (EFI stub) and initramfs over HTTP; airroot init enrolls and switches into
// systemd. Checked: enrolled, overlay root, ssh on 22 and 2222 with host certificates, the boot reported running.
// Then UEFI PXE with the same dnsmasq (arch 7 -> snponly.efi over dnsmasq's TFTP), as far as the kernel loading.
// Nothing leaves the namespace: no route out, the VM's only link is the tap. One VM at a time (/tmp/airroot-qemu.lock).
// Set AIRROOT_SKIP_VM=1 to skip (never skipped silently).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { copyFileSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { Subprocess } from "bun";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { buildTestInitramfs, E2E_CACHE, kernelDir, privateAirroot } from "../helpers/boot";
import { debianImage } from "../helpers/debian-image";
import { certifiedSsh, collectConsole, qemuLock, startQemuTpm, tpmArgs } from "../helpers/vm-node";
import { readConfig, statePaths, writeConfig } from "../../src/server/state";

const SKIP = process.env.AIRROOT_SKIP_VM === "1";
if (SKIP) console.warn("test/e2e/pxe-uefi-http.test.ts: skipped because AIRROOT_SKIP_VM=1");

const MAC = "52:54:00:12:34:58";
const PXE_MAC = "52:54:00:12:34:59";
const OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd";

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
    sh([airroot, "image", "pack", tree, "--state", state, "--profile", "bookworm"]);
    rmSync(tree, { recursive: true, force: true });
    node("add", "n002", "--mac", MAC, "--profile", "bookworm");
    node("arm", "n002", "--once");
    node("add", "n003", "--mac", PXE_MAC, "--profile", "bookworm");
    sh([airroot, "serve", "site-config", "--state", state, "--out", join(dir, "site")]);
    const kdir = kernelDir();
    const initrd = buildTestInitramfs(join(dir, "initrd.zst"), [], kdir, join(dir, "site"));
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

    // dnsmasq with the printed configuration, as is (root: the TFTP root is inside the 0700 state dir).
    const conf = sh([airroot, "serve", "dhcp-config", "dnsmasq", "--state", state, "--range", `10.214.${n}.50,10.214.${n}.150,255.255.255.0,1h`, "--interface", "tap0"]);
    writeFileSync(join(dir, "dnsmasq.conf"), conf);
    expect(conf).toContain(`dhcp-boot=tag:httpclient,tag:!ipxe,http://${SERVER_IP}/boot/snponly.efi`);
    dnsmasq = Bun.spawn(inNs(["dnsmasq", "--keep-in-foreground", "--log-facility=-", `--conf-file=${join(dir, "dnsmasq.conf")}`,
      `--dhcp-leasefile=${join(dir, "leases")}`, `--pid-file=${join(dir, "dnsmasq.pid")}`, "--user=root", "--group=root"]),
    { stdout: "pipe", stderr: "pipe" });
    dnsmasqLog = collectConsole(dnsmasq);
    for (let i = 0; i < 50 && !/started, version/.test(dnsmasqLog.out) && dnsmasq.exitCode === null; i++) await Bun.sleep(100);
    if (!/started, version/.test(dnsmasqLog.out)) throw new Error(`dnsmasq did not start: ${dnsmasqLog.out}`);
  }, 600_000);

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

  test("power-on to systemd through UEFI HTTP boot: enrolled, overlay root, certified ssh on 22 and 2222, reported running", async () => {
    const lock = await qemuLock();
    const tpm = await startQemuTpm(dir);
    const vars = join(dir, "OVMF_VARS.fd");
    copyFileSync(OVMF_VARS, vars);
    const vm = Bun.spawn(inNs(["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1536", "-machine", "q35", "-nographic", "-no-reboot",
      "-drive", `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`, "-drive", `if=pflash,format=raw,unit=1,file=${vars}`,
      "-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n", "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n",
      ...tpmArgs(tpm.sock),
      "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no", "-device", `virtio-net-pci,netdev=n0,mac=${MAC},romfile=`]),
    { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    const box = collectConsole(vm);
    try {
      const deadline = Date.now() + 480_000;
      while (!/login:/.test(box.out) && Date.now() < deadline && vm.exitCode === null) await Bun.sleep(500);
      if (!/login:/.test(box.out)) throw new Error(`no login prompt on the serial console; console:\n${box.out}\ndnsmasq:\n${dnsmasqLog.out}`);
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

      // ssh from inside the namespace to the node's leased address.
      const lease = readFileSync(join(dir, "leases"), "utf8").split("\n").find((l) => l.includes(MAC));
      const ip = lease?.split(" ")[2];
      if (!ip) throw new Error(`no lease for ${MAC}: ${readFileSync(join(dir, "leases"), "utf8")}`);
      const fwd22 = await nsForward(ns, ip, 22), fwd2222 = await nsForward(ns, ip, 2222);
      try {
        const ssh = certifiedSsh(dir, readFileSync(statePaths(state).sshCaPub, "utf8"), key, "n002");
        let ok = false, last = "";
        for (let i = 0; i < 20 && !ok; i++) {
          const r = await ssh(fwd22.port, "true", 20_000);
          ok = r.code === 0; last = r.err;
          if (!ok) await Bun.sleep(2000);
        }
        if (!ok) throw new Error(`ssh on 22 with the host certificate failed: ${last}`);
        const os = await ssh(fwd22.port, "grep ' / ' /proc/mounts; systemctl is-system-running --wait; hostname; cat /proc/cmdline; ls -d /sys/firmware/efi");
        expect(os.out).toMatch(/^airroot \/ overlay rw,.*lowerdir=\/mnt\/remote,upperdir=\/mnt\/overlay\/upper/m);
        expect(os.out).toMatch(/^(running|degraded)$/m);
        expect(os.out).toMatch(/^n002$/m);
        // The EFI stub shows the image name first.
        expect(os.out).toMatch(/^vmlinuz initrd=initramfs console=ttyS0 quiet airroot\.rescue=poweroff airroot\.server=https:\/\/10\.214\.\d+\.1$/m);
        expect(os.out).toMatch(/^\/sys\/firmware\/efi$/m); // booted through UEFI
        const initramfs = await ssh(fwd2222.port, "grep ' / ' /proc/mounts");
        expect(initramfs.code).toBe(0);
        expect(initramfs.out).toMatch(/^rootfs \/ rootfs /m);
        let list = "";
        for (let i = 0; i < 60 && !/n002.*running/.test(list); i++) { list = node("list"); if (!/n002.*running/.test(list)) await Bun.sleep(1000); }
        expect(list).toMatch(/n002.*running \(/);
        await ssh(fwd22.port, "systemctl poweroff", 20_000);
      } finally { fwd22.stop(); fwd2222.stop(); }
      const code = await Promise.race([vm.exited, Bun.sleep(120_000).then(() => "still running")]);
      if (code !== 0) throw new Error(`poweroff did not finish (${code}); console tail:\n${box.out.slice(-3000)}`);
    } finally {
      vm.kill("SIGKILL");
      await vm.exited;
      await tpm.stop();
      await lock.release();
      try { writeFileSync(join(E2E_CACHE, "pxe-uefi-http.console"), box.out); } catch {}
    }
  }, 720_000);

  test("UEFI PXE (arch 7) with the same configuration: snponly.efi over dnsmasq's TFTP, then the per-node script and the kernel over HTTP", async () => {
    const lock = await qemuLock();
    const vars = join(dir, "OVMF_VARS-pxe.fd");
    copyFileSync(OVMF_VARS, vars);
    const vm = Bun.spawn(inNs(["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1024", "-machine", "q35", "-nographic", "-no-reboot",
      "-drive", `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`, "-drive", `if=pflash,format=raw,unit=1,file=${vars}`,
      "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n",
      "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no", "-device", `virtio-net-pci,netdev=n0,mac=${PXE_MAC},romfile=`]),
    { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    const box = collectConsole(vm);
    try {
      const want = /http:\/\/10\.214\.\d+\.1\/boot\/vmlinuz\.\.\. ok/;
      const deadline = Date.now() + 240_000;
      while (!want.test(box.out) && Date.now() < deadline && vm.exitCode === null) await Bun.sleep(500);
      if (!want.test(box.out)) throw new Error(`the kernel was not loaded; console:\n${box.out}\ndnsmasq:\n${dnsmasqLog.out}`);
      expect(box.out).toMatch(/Start PXE over IPv4/);
      expect(box.out).toMatch(/airroot: booting n003 from http:\/\/10\.214\./);
      expect(dnsmasqLog.out).toMatch(/vendor class: PXEClient:Arch:00007/);
      expect(dnsmasqLog.out).toMatch(/option: 67 bootfile-name +snponly\.efi\n/);
      expect(dnsmasqLog.out).toMatch(/dnsmasq-tftp\[\d+\]: sent \S+\/boot\/snponly\.efi to 10\.214\./);
    } finally {
      vm.kill("SIGKILL");
      await vm.exited;
      await lock.release();
      try { writeFileSync(join(E2E_CACHE, "pxe-uefi-pxe.console"), box.out); } catch {}
    }
  }, 300_000);
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
