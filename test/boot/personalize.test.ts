// What the new root gets written so it looks installed: NetworkManager keyfiles, hostname, getty.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { lstatSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { nmKeyfile, personalize, stableUuid } from "../../src/boot/personalize";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";

afterAll(removeScratchDirs);

test("NetworkManager keyfiles by MAC, hostname, serial getty for an autodetected console", () => {
  const dir = scratchDir();
  const root = join(dir, "sysroot"), sys = join(dir, "sys");
  for (const [n, mac] of [["eth0", "52:54:00:12:34:56"], ["eth1", "52:54:00:ab:cd:ef"], ["ib0", "80:00:00:48:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:3b:1c"]]) {
    mkdirSync(join(sys, "class/net", n), { recursive: true });
    writeFileSync(join(sys, "class/net", n, "address"), mac + "\n");
    writeFileSync(join(sys, "class/net", n, "ifindex"), { eth0: "2\n", eth1: "3\n", ib0: "4\n" }[n]!);
  }
  const run = join(dir, "run");
  const r = personalize({
    root, sysDir: sys, runDir: run, hostname: "node1.cluster.test", authorizedKeys: "ssh-ed25519 AAAA admin",
    console: { tty: "ttyS1", baud: 115200, source: "spcr" },
    interfaces: [
      { iface: "eth0", method: "dhcp", address: "10.0.2.15", prefix: 24 },
      { iface: "eth1", method: "static", address: "172.30.1.5", prefix: 16, gateway: "172.30.0.1", dns: ["172.30.0.1"] },
      { iface: "ib0", method: "link-local" },
    ],
  });
  expect(r.written.sort()).toEqual([`${run}/NetworkManager/devices/2`, `${run}/NetworkManager/devices/3`,
    "etc/NetworkManager/system-connections/eth0.nmconnection", "etc/NetworkManager/system-connections/eth1.nmconnection",
    "etc/hostname", "etc/systemd/system/getty.target.wants/serial-getty@ttyS1.service", "root/.ssh/authorized_keys"]);
  expect(readFileSync(join(root, "root/.ssh/authorized_keys"), "utf8")).toBe("ssh-ed25519 AAAA admin\n");
  expect(lstatSync(join(root, "root/.ssh")).mode & 0o777).toBe(0o700);
  const k0 = join(root, "etc/NetworkManager/system-connections/eth0.nmconnection");
  expect(lstatSync(k0).mode & 0o777).toBe(0o600);
  const t0 = readFileSync(k0, "utf8");
  expect(t0).toContain("id=eth0\n");
  expect(t0).toContain("mac-address=52:54:00:12:34:56\n");
  expect(t0).toContain("[ipv4]\nmethod=auto\n");
  const t1 = readFileSync(join(root, "etc/NetworkManager/system-connections/eth1.nmconnection"), "utf8");
  expect(t1).toContain("method=manual\naddress1=172.30.1.5/16,172.30.0.1\ndns=172.30.0.1;\n");
  expect(readFileSync(join(root, "etc/hostname"), "utf8")).toBe("node1.cluster.test\n");
  expect(readFileSync(join(run, "NetworkManager/devices/2"), "utf8")).toBe(`[device]\nmanaged=true\nconnection-uuid=${stableUuid("52:54:00:12:34:56")}\n`);
  expect(readlinkSync(join(root, "etc/systemd/system/getty.target.wants/serial-getty@ttyS1.service"))).toBe("/lib/systemd/system/serial-getty@.service");
  // Idempotent (a retried step must not fail on its own files).
  personalize({ root, sysDir: sys, runDir: run, console: { tty: "ttyS1", baud: 115200, source: "spcr" }, interfaces: [] });
  expect(() => personalize({ root, interfaces: [], hostname: "bad name;" })).toThrow(/not a valid host name/);
});

test("connection UUIDs are stable per MAC and well-formed", () => {
  expect(stableUuid("52:54:00:12:34:56")).toBe(stableUuid("52:54:00:12:34:56"));
  expect(stableUuid("a")).not.toBe(stableUuid("b"));
  expect(stableUuid("x")).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  expect(nmKeyfile({ iface: "eno1", method: "dhcp" }, "aa:bb:cc:dd:ee:ff")).toContain("mac-address=AA:BB:CC:DD:EE:FF");
});

test("machine-id: 32 hex digits, read-only; anything else is refused", () => {
  const root = scratchDir("airroot-personalize-mid-");
  const r = personalize({ root, interfaces: [], machineId: "0123456789abcdef0123456789abcdef", runDir: join(root, "run") });
  expect(r.written).toContain("etc/machine-id");
  expect(readFileSync(join(root, "etc/machine-id"), "utf8")).toBe("0123456789abcdef0123456789abcdef\n");
  expect(lstatSync(join(root, "etc/machine-id")).mode & 0o777).toBe(0o444);
  for (const bad of ["", "0123", "0123456789ABCDEF0123456789ABCDEF", "0123456789abcdef0123456789abcdef\n"])
    expect(() => personalize({ root, interfaces: [], machineId: bad, runDir: join(root, "run") })).toThrow(/machine id/);
});
