// `airroot serve dhcp-config dnsmasq|isc`: the printed configurations pass the real servers' own checks (`dnsmasq
// --test -C FILE`; `dhcpd -t -cf FILE` from isc-dhcp-server, installed by scripts/deps.sh) and hand out what each boot
// path needs: iPXE (user class / option 175) -> the script URL, so iPXE never loads iPXE again; UEFI HTTP boot ->
// option 60 HTTPClient echoed and the EFI iPXE URL; UEFI PXE (arch 7/9) -> the EFI iPXE; BIOS PXE -> undionly.kpxe.
// Bad input is refused naming the option; nothing typed reaches the file unchecked.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { existsSync, writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { initState, readConfig, writeConfig } from "../../src/server/state.ts";
import { dhcpConfig, type DhcpConfigOptions } from "../../src/server/dhcpconfig.ts";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const BUN = join(import.meta.dir, "../../node_modules/.bin/bun");
let dir: string, state: string;

beforeAll(async () => {
  dir = scratchDir();
  state = join(dir, "state");
  await initState(state, { addresses: ["10.0.2.100"] });
  writeConfig(state, { ...readConfig(state), httpPort: 8080 });
}, 30_000);
afterAll(removeScratchDirs);

const cli = (...a: string[]) => {
  const r = Bun.spawnSync([BUN, MAIN, "serve", "dhcp-config", ...a], { stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
};

function check(cmd: string[], file: string, text: string): { code: number | null; out: string } {
  writeFileSync(file, text);
  const r = Bun.spawnSync([...cmd, file], { stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, out: r.stdout.toString() + r.stderr.toString() };
}

describe("dnsmasq", () => {
  test("full server: passes dnsmasq --test; each path's tags and files, non-overlapping", () => {
    const r = cli("dnsmasq", "--state", state, "--range", "10.0.2.50,10.0.2.150,255.255.255.0,1h", "--interface", "eth1", "--router", "10.0.2.1");
    expect(r.code).toBe(0);
    const c = check(["dnsmasq", "--test", "-C"], join(dir, "full.conf"), r.out);
    expect(c.out).toContain("syntax check OK");
    expect(c.code).toBe(0);
    const lines = r.out.split("\n").filter((l) => l && !l.startsWith("#")).map((l) => l.replace(/\s+#.*$/, ""));
    expect(lines).toEqual([
      "port=0", "interface=eth1", "bind-interfaces", "dhcp-range=10.0.2.50,10.0.2.150,255.255.255.0,1h", "dhcp-option=option:router,10.0.2.1", "log-dhcp",
      "dhcp-userclass=set:ipxe,iPXE", "dhcp-match=set:ipxe,175",
      "dhcp-match=set:efi64,option:client-arch,7", "dhcp-match=set:efi64,option:client-arch,9",
      "dhcp-vendorclass=set:httpclient,HTTPClient",
      "dhcp-boot=tag:ipxe,http://10.0.2.100:8080/boot/ipxe",
      "dhcp-option-force=tag:httpclient,tag:!ipxe,60,HTTPClient",
      "dhcp-boot=tag:httpclient,tag:!ipxe,http://10.0.2.100:8080/boot/snponly.efi",
      "dhcp-boot=tag:efi64,tag:!httpclient,tag:!ipxe,snponly.efi",
      "dhcp-boot=tag:!efi64,tag:!httpclient,tag:!ipxe,undionly.kpxe",
      "enable-tftp", `tftp-root=${join(state, "boot")}`,
    ]);
  });

  test("proxy DHCP beside the site's server, --efi ipxe.efi, --no-tftp (the PXE ROMs pointed at --server's TFTP): dnsmasq --test", () => {
    const p = cli("dnsmasq", "--proxy", "--state", state, "--range", "10.0.2.7,255.255.255.0", "--efi", "ipxe.efi");
    expect(p.code).toBe(0);
    expect(check(["dnsmasq", "--test", "-C"], join(dir, "proxy.conf"), p.out).code).toBe(0);
    expect(p.out).toContain("dhcp-range=10.0.2.0,proxy,255.255.255.0\n");
    expect(p.out).toContain('pxe-service=tag:!ipxe,x86PC,"airroot: iPXE for BIOS",undionly.kpxe\n');
    expect(p.out).toContain('pxe-service=tag:!ipxe,X86-64_EFI,"airroot: iPXE for UEFI",ipxe.efi\n');
    expect(p.out).toContain("dhcp-boot=tag:ipxe,http://10.0.2.100:8080/boot/ipxe\n");
    const n = cli("dnsmasq", "--state", state, "--range", "10.0.2.50,10.0.2.150", "--no-tftp", "--server", "10.0.2.5");
    expect(n.code).toBe(0);
    expect(check(["dnsmasq", "--test", "-C"], join(dir, "notftp.conf"), n.out).code).toBe(0);
    expect(n.out).not.toContain("enable-tftp");
    expect(n.out).toContain("dhcp-boot=tag:!efi64,tag:!httpclient,tag:!ipxe,undionly.kpxe,,10.0.2.5\n");
    expect(n.out).toContain("dhcp-boot=tag:ipxe,http://10.0.2.5:8080/boot/ipxe\n");
  });
});

test("--https: UEFI HTTP boot and iPXE get the advertised https:// URLs (no plain-HTTP listener needed); dnsmasq --test and dhcpd -t", () => {
  const s2 = join(dir, "s-https");
  expect(Bun.spawnSync([BUN, MAIN, "serve", "init", "--state", s2, "--address", "10.0.2.100", "--advertise", "https://boot.example:8443"]).exitCode).toBe(0);
  const r = cli("dnsmasq", "--https", "--state", s2, "--range", "10.0.2.50,10.0.2.150", "--server", "10.0.2.100");
  expect(r.code).toBe(0);
  expect(check(["dnsmasq", "--test", "-C"], join(dir, "https.conf"), r.out).code).toBe(0);
  expect(r.out).toContain("dhcp-boot=tag:ipxe,https://boot.example:8443/boot/ipxe\n");
  expect(r.out).toContain("dhcp-boot=tag:httpclient,tag:!ipxe,https://boot.example:8443/boot/snponly.efi\n");
  expect(r.out).toContain("dhcp-boot=tag:!efi64,tag:!httpclient,tag:!ipxe,undionly.kpxe\n");
  const i = cli("isc", "--https", "--state", s2, "--range", "10.0.2.50,10.0.2.150", "--server", "10.0.2.100");
  expect(i.out).toContain('filename "https://boot.example:8443/boot/ipxe";');
  if (existsSync("/usr/sbin/dhcpd")) {
    writeFileSync(join(dir, "https-dhcpd.conf"), i.out);
    expect(Bun.spawnSync(["dhcpd", "-t", "-cf", join(dir, "https-dhcpd.conf"), "-lf", join(dir, "leases2"), "-pf", join(dir, "pid2")]).exitCode).toBe(0);
  }
});

test("--http-boot uki: UEFI HTTP boot gets /boot/airroot.efi (the signed UKI) over http or https; PXE and iPXE unchanged; a bad value refused", () => {
  const s3 = join(dir, "s-uki");
  expect(Bun.spawnSync([BUN, MAIN, "serve", "init", "--state", s3, "--address", "10.0.2.100"]).exitCode).toBe(0);
  expect(Bun.spawnSync([BUN, MAIN, "serve", "config", "set", "http-port", "80", "--state", s3]).exitCode).toBe(0);
  const r = cli("dnsmasq", "--http-boot", "uki", "--state", s3, "--range", "10.0.2.50,10.0.2.150");
  expect(r.code).toBe(0);
  expect(check(["dnsmasq", "--test", "-C"], join(dir, "uki.conf"), r.out).code).toBe(0);
  expect(r.out).toContain("dhcp-boot=tag:httpclient,tag:!ipxe,http://10.0.2.100/boot/airroot.efi\n");
  expect(r.out).toContain("dhcp-boot=tag:ipxe,http://10.0.2.100/boot/ipxe\n");
  expect(r.out).toContain("dhcp-boot=tag:!efi64,tag:!httpclient,tag:!ipxe,undionly.kpxe\n");
  const h = cli("isc", "--http-boot", "uki", "--https", "--state", s3, "--range", "10.0.2.50,10.0.2.150");
  expect(h.out).toContain('filename "https://10.0.2.100/boot/airroot.efi";');
  const bad = cli("dnsmasq", "--http-boot", "grub", "--state", s3, "--range", "10.0.2.50,10.0.2.150");
  expect(bad.code).not.toBe(0);
  expect(bad.out).toBe("");
  expect(bad.err).toContain('--http-boot "grub": use ipxe');
});

test("--http-boot shim: UEFI HTTP boot gets /boot/shimx64.efi (Debian's Secure Boot chain); refused without plain HTTP on port 80", () => {
  const s4 = join(dir, "s-shim");
  expect(Bun.spawnSync([BUN, MAIN, "serve", "init", "--state", s4, "--address", "10.0.2.100"]).exitCode).toBe(0);
  expect(Bun.spawnSync([BUN, MAIN, "serve", "config", "set", "http-port", "80", "--state", s4]).exitCode).toBe(0);
  const r = cli("dnsmasq", "--http-boot", "shim", "--state", s4, "--range", "10.0.2.50,10.0.2.150");
  expect(r.code).toBe(0);
  expect(check(["dnsmasq", "--test", "-C"], join(dir, "shim.conf"), r.out).code).toBe(0);
  expect(r.out).toContain("dhcp-boot=tag:httpclient,tag:!ipxe,http://10.0.2.100/boot/shimx64.efi\n");
  expect(cli("isc", "--http-boot", "shim", "--state", s4, "--range", "10.0.2.50,10.0.2.150").out).toContain('filename "http://10.0.2.100/boot/shimx64.efi";');
  const https = cli("dnsmasq", "--http-boot", "shim", "--https", "--state", s4, "--range", "10.0.2.50,10.0.2.150");
  expect(https.code).not.toBe(0);
  expect(https.err).toContain("--http-boot shim needs plain HTTP on port 80 (not --https)");
  // UEFI PXE under Secure Boot: shim over TFTP for arch 7/9 (GRUB then reads grub/grub.cfg from the TFTP root).
  const pxe = cli("dnsmasq", "--efi", "shimx64.efi", "--state", s4, "--range", "10.0.2.50,10.0.2.150");
  expect(pxe.code).toBe(0);
  expect(check(["dnsmasq", "--test", "-C"], join(dir, "shim-pxe.conf"), pxe.out).code).toBe(0);
  expect(pxe.out).toContain("dhcp-boot=tag:efi64,tag:!httpclient,tag:!ipxe,shimx64.efi\n");
  expect(cli("isc", "--efi", "shimx64.efi", "--state", s4, "--range", "10.0.2.50,10.0.2.150").out).toContain('filename "shimx64.efi";');
  const img = cli("dnsmasq", "--http-boot", "img", "--state", s4, "--range", "10.0.2.50,10.0.2.150");
  expect(img.out).toContain("dhcp-boot=tag:httpclient,tag:!ipxe,http://10.0.2.100/boot/boot.img\n");
  expect(Bun.spawnSync([BUN, MAIN, "serve", "config", "set", "http-port", "8080", "--state", s4]).exitCode).toBe(0);
  const port = cli("dnsmasq", "--http-boot", "shim", "--state", s4, "--range", "10.0.2.50,10.0.2.150");
  expect(port.code).not.toBe(0);
  expect(port.out).toBe("");
  expect(port.err).toContain("(http-port is 8080): Debian's signed GRUB fetches /grub/grub.cfg");
  expect(cli("dnsmasq", "--efi", "shimx64.efi", "--state", s4, "--range", "10.0.2.50,10.0.2.150").err).toContain("--efi shimx64.efi needs plain HTTP on port 80 (http-port is 8080)");
});

describe("ISC dhcpd", () => {
  test("passes dhcpd -t (or, without dhcpd, is balanced and names every path)", () => {
    const r = cli("isc", "--state", state, "--range", "10.0.2.50,10.0.2.150,255.255.255.0,12h", "--router", "10.0.2.1", "--interface", "eth1");
    expect(r.code).toBe(0);
    const file = join(dir, "dhcpd.conf");
    writeFileSync(file, r.out);
    if (existsSync("/usr/sbin/dhcpd")) {
      // -t only parses; -lf/-pf keep it away from the system's lease and PID files.
      const t = Bun.spawnSync(["dhcpd", "-t", "-cf", file, "-lf", join(dir, "leases"), "-pf", join(dir, "pid")], { stdout: "pipe", stderr: "pipe" });
      expect(t.stderr.toString()).not.toMatch(/error|expecting/i);
      expect(t.exitCode).toBe(0);
    } else {
      console.warn("dhcpconfig.test.ts: no /usr/sbin/dhcpd (isc-dhcp-server; scripts/deps.sh installs it): checked structurally only");
    }
    const body = r.out.replace(/#.*$/gm, "").replace(/"[^"]*"/g, '""');
    expect(body.split("{").length).toBe(body.split("}").length);
    for (const l of body.split("\n").map((x) => x.trim()).filter(Boolean)) expect(l).toMatch(/[;{}]$/);
    expect(r.out).toContain("subnet 10.0.2.0 netmask 255.255.255.0 {");
    expect(r.out).toContain("range 10.0.2.50 10.0.2.150;");
    expect(r.out).toContain("option routers 10.0.2.1;");
    expect(r.out).toContain('if exists user-class and option user-class = "iPXE" {\n    filename "http://10.0.2.100:8080/boot/ipxe";');
    expect(r.out).toContain('option vendor-class-identifier "HTTPClient";\n    filename "http://10.0.2.100:8080/boot/snponly.efi";');
    expect(r.out).toContain('option client-arch = 00:07 or option client-arch = 00:09 {\n    filename "snponly.efi";');
    expect(r.out).toContain('} else {\n    filename "undionly.kpxe";');
    expect(r.out).toContain("default-lease-time 43200;");
  });
});

describe("refusals", () => {
  const base: DhcpConfigOptions = { kind: "dnsmasq", advertised: ["https://10.0.2.100"], httpPort: 80, mode: "full", range: "10.0.2.50,10.0.2.150", tftpRoot: "/srv/tftp" };
  test("bad options are refused naming the option, before anything is printed", () => {
    const cases: [Partial<DhcpConfigOptions>, RegExp][] = [
      [{ httpPort: 0 }, /no plain-HTTP listener \(config http-port is 0\).*serve config set http-port 80/],
      [{ range: "10.0.2.50" }, /--range "10.0.2.50": give START,END/],
      [{ range: "10.0.2.50,10.0.3.5" }, /not inside one 255\.255\.255\.0 subnet/],
      [{ range: "10.0.2.150,10.0.2.50" }, /ends \(10\.0\.2\.50\) before it starts/],
      [{ range: "10.0.2.50,10.0.2.150,255.0.255.0" }, /not a contiguous netmask/],
      [{ range: "10.0.2.50,10.0.2.150,255.255.255.0,1h\nenable-ra" }, /lease [\s\S]* is not a time/],
      [{ range: "10.0.2.50\nconf-file=/etc/x,10.0.2.60" }, /--range start [\s\S]* is not an IPv4 address/],
      [{ iface: "eth0\ndhcp-script=/bin/sh" }, /--interface [\s\S]* is not an interface name/],
      [{ server: "10.0.2.100\nx" }, /--server [\s\S]* is not an IPv4 address/],
      [{ router: "fe80::1" }, /--router "fe80::1" is not an IPv4 address/],
      [{ tftpRoot: "/srv/tftp\nconf-file=/x" }, /TFTP root [\s\S]* must be an absolute path/],
      [{ advertised: ["https://[fd00::1]", "https://boot.example"] }, /no IPv4 address among the advertised URLs.*give --server IPV4/],
      [{ kind: "isc", mode: "proxy", range: "10.0.2.0" }, /ISC dhcpd cannot be a proxy DHCP server/],
    ];
    for (const [o, re] of cases) expect(() => dhcpConfig({ ...base, ...o })).toThrow(re);
  });

  test("the CLI: unknown kind and --efi, --help", () => {
    const k = cli("kea", "--state", state, "--range", "10.0.2.50,10.0.2.150");
    expect(k.code).not.toBe(0);
    expect(k.err).toContain('"kea" is not a DHCP server airroot writes for: use dnsmasq or isc');
    const e = cli("dnsmasq", "--state", state, "--range", "10.0.2.50,10.0.2.150", "--efi", "grub.efi");
    expect(e.err).toContain('--efi "grub.efi": use snponly.efi, ipxe.efi or shimx64.efi');
    const h = cli("--help");
    expect(h.code).toBe(0);
    expect(h.out).toContain("UEFI HTTP boot");
    expect(h.out).toContain("--proxy");
  });
});
