// IP parsing, subnet containment and the trusted-network rule, with property tests against URL's IPv6 canonicaliser.
import { expect, test } from "bun:test";
import { inCidr, parseCidr, parseIp, trustedSource } from "../../src/server/netaddr.ts";

const hex4 = (b: Uint8Array) => Array.from({ length: 8 }, (_, i) => ((b[2 * i] << 8) | b[2 * i + 1]).toString(16)).join(":");

test("property: any IPv6 address, written expanded or compressed (by WHATWG URL), parses to the same bytes", () => {
  for (let i = 0; i < 2000; i++) {
    const b = crypto.getRandomValues(new Uint8Array(16));
    // Runs of zero groups exercise "::" compression.
    for (let k = 0; k < 16; k++) if (Math.random() < 0.4) b[k] = 0;
    if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) continue; // v4-mapped: tested below
    const expanded = hex4(b);
    const compressed = new URL(`http://[${expanded}]/`).hostname.slice(1, -1);
    for (const text of [expanded, compressed]) {
      const ip = parseIp(text);
      expect(ip?.v).toBe(6);
      expect(Array.from(ip!.bytes)).toEqual(Array.from(b));
    }
  }
});

test("IPv4, IPv4-mapped IPv6 and zones; invalid text gives null, never a throw", () => {
  expect(Array.from(parseIp("10.1.2.3")!.bytes)).toEqual([10, 1, 2, 3]);
  expect(parseIp("::ffff:10.1.2.3")).toEqual(parseIp("10.1.2.3"));
  expect(Array.from(parseIp("fe80::1%eth0")!.bytes).slice(0, 2)).toEqual([0xfe, 0x80]);
  for (const bad of ["", "1.2.3", "1.2.3.256", "::g", "1::2::3", "a".repeat(100), "1.2.3.4/8", " 1.2.3.4"]) expect(parseIp(bad)).toBeNull();
  for (let i = 0; i < 1000; i++) {
    const s = Array.from({ length: Math.floor(Math.random() * 40) }, () => "0123456789abcdef:.%/x"[Math.floor(Math.random() * 21)]).join("");
    expect(() => parseIp(s)).not.toThrow();
  }
});

test("subnet containment at every prefix length matches a bit-by-bit reference", () => {
  const bit = (b: Uint8Array, i: number) => (b[i >> 3] >> (7 - (i & 7))) & 1;
  for (let i = 0; i < 500; i++) {
    const a = crypto.getRandomValues(new Uint8Array(4)), b = a.slice();
    const flip = Math.floor(Math.random() * 32);
    b[flip >> 3] ^= 1 << (7 - (flip & 7));
    const bits = Math.floor(Math.random() * 33);
    const c = parseCidr(`${Array.from(a).join(".")}/${bits}`);
    const same = Array.from({ length: bits }, (_, k) => bit(a, k) === bit(b, k)).every(Boolean);
    expect(inCidr({ v: 4, bytes: b }, c)).toBe(same);
  }
  expect(inCidr(parseIp("fd00::5")!, parseCidr("fd00::/64"))).toBe(true);
  expect(inCidr(parseIp("fd00:0:0:1::5")!, parseCidr("fd00::/64"))).toBe(false);
  expect(inCidr(parseIp("10.0.0.1")!, parseCidr("::/0"))).toBe(false); // families never mix
  for (const bad of ["10.0.0.0/33", "fd00::/129", "10.0.0.0/8/8", "x/8", "10.0.0.0/-1"]) expect(() => parseCidr(bad)).toThrow("invalid subnet");
});

test("trust rules can each be switched off", () => {
  const none = { linkLocal: false, attached: false, subnets: [] };
  expect(trustedSource("fe80::1", none).trusted).toBe(false);
  expect(trustedSource("127.0.0.1", none).trusted).toBe(false);
  expect(trustedSource("fe80::1", { ...none, linkLocal: true }).why).toBe("link-local");
  expect(trustedSource("192.0.2.9", { ...none, subnets: ["192.0.2.0/28"] }).why).toBe("configured subnet 192.0.2.0/28");
  expect(trustedSource("192.0.2.99", { ...none, subnets: ["192.0.2.0/28"] }).trusted).toBe(false);
});
