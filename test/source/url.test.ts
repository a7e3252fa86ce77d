import { expect, test } from "bun:test";
import { parseImageUrl, UrlError } from "../../src/source/url";

test("parses IPv4, host names, ports and query", () => {
  const a = parseImageUrl("https://172.30.254.1/confluent-public/os/x/rootimg.sfs");
  expect(a).toMatchObject({ host: "172.30.254.1", certHost: "172.30.254.1", isIp: true, port: 443,
    path: "/confluent-public/os/x/rootimg.sfs", name: "rootimg.sfs", origin: "https://172.30.254.1:443" });
  const b = parseImageUrl("HTTPS://Images.Example.org:8443/a/b%20c.sfs?v=2");
  expect(b).toMatchObject({ host: "images.example.org", isIp: false, port: 8443, path: "/a/b%20c.sfs?v=2", name: "b c.sfs" });
});

test("parses IPv6 literals and link-local zones (RFC 6874 %25)", () => {
  const a = parseImageUrl("https://[::1]:8443/img.sfs");
  expect(a).toMatchObject({ host: "::1", certHost: "::1", isIp: true, port: 8443, origin: "https://[::1]:8443" });
  const z = parseImageUrl("https://[fe80::38f7:56ff:fe06:8945%253]/confluent-public/rootimg.sfs");
  expect(z).toMatchObject({ host: "fe80::38f7:56ff:fe06:8945%3", certHost: "fe80::38f7:56ff:fe06:8945", zone: "3", port: 443 });
  const e = parseImageUrl("https://[FE80::1%25eth0]:444/x");
  expect(e).toMatchObject({ host: "fe80::1%eth0", certHost: "fe80::1", zone: "eth0", origin: "https://[fe80::1]:444" });
});

test("rejects what it cannot serve, with a reason", () => {
  const bad: [string, RegExp][] = [
    ["http://h/x", /scheme http is not supported/],
    ["ftp://h/x", /scheme ftp/],
    ["https://h", /missing path/],
    ["https://h/", /must end in a file name/],
    ["https://h/dir/", /must end in a file name/],
    ["https://u:p@h/x", /user:password/],
    ["https://[::1/x", /missing \]/],
    ["https://[::g]/x", /not an IPv6 address/],
    ["https://::1/x", /must be in brackets/],
    ["https://h:0/x", /out of range/],
    ["https://h:99999/x", /out of range/],
    ["https://h:12a/x", /bad port/],
    ["https://999.1.1.1/x", /not a valid IPv4/],
    ["https://h/x#frag", /fragments/],
    ["https://h/a b", /percent-encoded/],
    ["https://h/a%zz", /bad percent-escape/],
    ["https://[fe80::1%25]/x", /bad IPv6 zone/],
    ["https://[fe80::1%25a/b]/x", /missing \]|bad IPv6 zone|unexpected/],
    ["https://-bad-.com/x", /bad host name/],
    ["https:///x", /missing host/],
    ["https://h/%2E%2E", /must end in a file name/],
  ];
  for (const [u, re] of bad) {
    let err: unknown;
    try { parseImageUrl(u); } catch (e) { err = e; }
    expect(err, u).toBeInstanceOf(UrlError);
    expect((err as Error).message, u).toMatch(re);
  }
});

// Deterministic PRNG so a failure can be reproduced.
function rng(seed: number) {
  return () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x80000000; };
}

test("fuzz: random and mutated URLs never throw anything but UrlError", () => {
  const r = rng(42);
  const alphabet = "https:/[]%25:.@?#0123456789abcdefABCDEF-_~ \t\n\u00e9\u0000fe80::1eth";
  const seeds = ["https://[fe80::1%25eth0]:443/a/b.sfs", "https://127.0.0.1:8443/x.sfs?q=1", "https://host.example/a%20b"];
  let ok = 0;
  for (let i = 0; i < 5000; i++) {
    let s: string;
    if (i % 2 === 0) {
      s = Array.from({ length: Math.floor(r() * 60) }, () => alphabet[Math.floor(r() * alphabet.length)]).join("");
    } else {
      const base = seeds[i % seeds.length].split("");
      for (let k = 0; k < 1 + Math.floor(r() * 4); k++) {
        const pos = Math.floor(r() * (base.length + 1)), op = r();
        if (op < 0.33) base.splice(pos, 1);
        else if (op < 0.66) base.splice(pos, 0, alphabet[Math.floor(r() * alphabet.length)]);
        else base.length = pos; // truncate
      }
      s = base.join("");
    }
    try {
      const u = parseImageUrl(s);
      ok++;
      // Whatever parses must be self-consistent.
      expect(u.port).toBeGreaterThanOrEqual(1);
      expect(u.port).toBeLessThanOrEqual(65535);
      expect(u.path.startsWith("/")).toBe(true);
      expect(u.name.length).toBeGreaterThan(0);
      expect(u.name.includes("/")).toBe(false);
    } catch (e) {
      if (!(e instanceof UrlError)) throw new Error(`non-UrlError for ${JSON.stringify(s)}: ${e}`);
    }
  }
  expect(ok).toBeGreaterThan(0);
  expect(() => parseImageUrl("https://h/" + "a".repeat(9000))).toThrow(UrlError);
  expect(() => parseImageUrl(undefined as unknown as string)).toThrow(UrlError);
});
