// DHCP lease parsing (with fuzzing) and IPv6 link-local lookup.
import { expect, test } from "bun:test";
import { LeaseError, parseLease } from "../../src/boot/lease";
import { compressIpv6, linkLocalAddress } from "../../src/boot/net";
import { writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { afterAll } from "bun:test";
import { join } from "node:path";

afterAll(removeScratchDirs);

const GOOD = "interface=eth0\nip=10.0.2.15\nmask=24\nrouter=10.0.2.2 10.0.2.3\ndns=10.0.2.3\nserverid=10.0.2.2\nlease=86400\ndomain=\nhostname=node1\n";

test("parses a udhcpc lease", () => {
  expect(parseLease(GOOD)).toEqual({ iface: "eth0", address: "10.0.2.15", prefix: 24, routers: ["10.0.2.2", "10.0.2.3"],
    dns: ["10.0.2.3"], serverId: "10.0.2.2", leaseSec: 86400, hostname: "node1" });
});

test("first key wins; a hostile hostname cannot inject fields; bad optional fields are dropped", () => {
  const l = parseLease(GOOD.replace("hostname=node1", "hostname=x\nip=6.6.6.6\nmask=1") + "dns=1.1.1.1\n");
  expect(l.address).toBe("10.0.2.15");
  expect(l.prefix).toBe(24);
  expect(l.hostname).toBe("x");
  expect(parseLease(GOOD.replace("hostname=node1", "hostname=a;rm -rf /")).hostname).toBeUndefined();
});

test("invalid address, prefix or interface is a LeaseError", () => {
  for (const bad of [GOOD.replace("ip=10.0.2.15", "ip=10.0.2.256"), GOOD.replace("mask=24", "mask=33"), GOOD.replace("mask=24", "mask="),
    GOOD.replace("interface=eth0", "interface=../../x"), "", "garbage"])
    expect(() => parseLease(bad)).toThrow(LeaseError);
});

test("fuzz: truncated and mutated leases either parse to valid values or throw LeaseError", () => {
  let seed = 5;
  const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  for (let i = 0; i < 5000; i++) {
    let t = GOOD.slice(0, rnd(GOOD.length + 1));
    if (i % 2) { const a = t.split(""); for (let k = 0; k < 3 && a.length; k++) a[rnd(a.length)] = String.fromCharCode(rnd(128)); t = a.join(""); }
    try {
      const l = parseLease(t);
      expect(l.prefix).toBeGreaterThanOrEqual(1);
      expect(l.prefix).toBeLessThanOrEqual(32);
      expect(l.address).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    } catch (e) { expect(e).toBeInstanceOf(LeaseError); }
  }
});

test("IPv6 text form and link-local lookup from if_inet6", () => {
  expect(compressIpv6("fe80 0 0 0 5054 ff fe12 3456".split(" "))).toBe("fe80::5054:ff:fe12:3456");
  expect(compressIpv6("0 0 0 0 0 0 0 1".split(" "))).toBe("::1");
  expect(compressIpv6("1 0 2 0 3 0 4 0".split(" "))).toBe("1:0:2:0:3:0:4:0");
  const dir = scratchDir();
  const f = join(dir, "if_inet6");
  writeFileSync(f, "00000000000000000000000000000001 01 80 10 80       lo\nfe800000000000005054fffe12345678 02 40 20 80     eth0\nfe800000000000005054fffe12349999 03 40 20 c0     eth1\n");
  expect(linkLocalAddress("eth0", f)).toBe("fe80::5054:fffe:1234:5678%eth0");
  expect(linkLocalAddress("eth1", f)).toBeUndefined(); // tentative
  expect(linkLocalAddress("lo", f)).toBeUndefined();
});
