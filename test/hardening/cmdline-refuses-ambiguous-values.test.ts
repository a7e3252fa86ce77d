// The kernel command line is read strictly: a URL is used exactly as the URL parser reads it, and one the parser
// would read differently from how it is written (https:10.0.0.1, https://10.1/, a ../ segment), or one carrying user
// info, is refused; timeouts are plain decimal digits (1e3 and 0x10 are refused, not read as 1000 and 16); airroot.ip
// names a valid Linux interface (not "." or ".."). Each refusal is a CmdlineError naming the option and what it expects.
// Link-local URLs keep their zone.
import { describe, expect, test } from "bun:test";
import { bootOptions, CmdlineError, parseCmdline, type BootOptions } from "../../src/boot/cmdline";

const opts = (line: string): BootOptions => bootOptions(parseCmdline(line)).options;
function refusal(line: string): CmdlineError {
  try { bootOptions(parseCmdline(line)); } catch (e) { if (e instanceof CmdlineError) return e; throw e; }
  throw new Error(`accepted: ${line}`);
}

describe("URLs: exactly https://HOST[:PORT][/PATH], as the parser reads them", () => {
  const refused: [string, RegExp][] = [
    ["airroot.server=https:10.0.0.1", /^airroot\.server: "https:10\.0\.0\.1" does not start with https:\/\/; expected https:\/\/HOST\[:PORT\]\[\/PATH\]/],
    ["airroot.server=https:/10.0.0.1", /does not start with https:\/\//],
    ["airroot.server=HTTPS://10.0.0.1", /does not start with https:\/\//],
    ["airroot.server=https://u:p@10.0.0.1/", /^airroot\.server: "https:\/\/u:p@10\.0\.0\.1\/" carries user info \(USER\[:PASSWORD\]@ before the host\), which is refused/],
    ["airroot.imageurl=https://evil@10.0.0.1/r.sfs", /^airroot\.imageurl: .* carries user info/],
    ["airroot.manifest=https://a:b@[fe80::1%25eth0]/m", /^airroot\.manifest: .* carries user info/],
    ["airroot.server=https://10.1/", /^airroot\.server: "https:\/\/10\.1\/" is read as https:\/\/10\.0\.0\.1\/: write it that way/],
    ["airroot.server=https://0x7f.1/", /is read as https:\/\/127\.0\.0\.1/],
    ["airroot.server=https://010.0.0.1/", /is read as https:\/\/8\.0\.0\.1/],
    ["airroot.server=https://10.0.0.1:0443/", /is read as https:\/\/10\.0\.0\.1/],
    ["airroot.server=https://10.0.0.1:/", /is read as https:\/\/10\.0\.0\.1/],
    ["airroot.server=https://10.0.0.1:0/", /names port 0/],
    ["airroot.server=https://10.0.0.1:99999/", /not a valid URL/],
    ["airroot.server=https://[::ffff:10.0.0.1]/", /is read as https:\/\/\[::ffff:a00:1\]/],
    ["airroot.server=https://[fe80:0:0::1%25eth0]/", /is read as https:\/\/\[fe80::1%25eth0\]\/: write it that way/],
    ["airroot.imageurl=https://10.0.0.1/a/../r.sfs", /has the path "\/a\/\.\.\/r\.sfs", which is read as "\/r\.sfs"/],
    ["airroot.imageurl=https://10.0.0.1/a/%2e%2e/r.sfs", /which is read as "\/r\.sfs"/],
    ["airroot.imageurl=https://10.0.0.1/a^b.sfs", /has the path .* which is read as "\/a%5Eb\.sfs"/],
    ["airroot.imageurl=https://10.0.0.1/r.sfs?x=1", /has a query/],
    ["airroot.imageurl=https://10.0.0.1/r.sfs#x", /has a fragment/],
    ['"airroot.imageurl=https://10.0.0.1/a b.sfs"', /contains a space/],
    ["airroot.imageurl=https://10.0.0.1\\r.sfs", /contains a backslash/],
    ["airroot.server=https://", /has no host/],
    ["airroot.server=https:///10.0.0.1/", /has no host/],
    ["airroot.server=https://bad_host/", /has a bad host name "bad_host"/],
    ["airroot.server=https://host./", /has a bad host name/],
    ["airroot.server=https://%31%30.0.0.1/", /is read as https:\/\/10\.0\.0\.1/],
    ["airroot.server=https://[fe80::1%25..]/", /names the zone "\.\.", which is neither an interface name nor an interface index/],
    ["airroot.server=https://[fe80::1%25]/", /bad IPv6 address or zone/],
  ];
  for (const [line, why] of refused) {
    test(`refused: ${line}`, () => {
      const e = refusal(line);
      expect(e.message).toMatch(why);
      expect(e.message).toContain(line.replace(/^"/, "").split("=")[0]); // names the option
    });
  }

  test("accepted URLs come back as the parser reads them: host in lower case, :443 dropped, zones as %25ZONE", () => {
    const o = opts("airroot.server=https://Boot.Example:443,https://10.0.2.100:8443/api/,https://[FE80::1%eth0] " +
      "airroot.imageurl=https://[fe80::1%252]:8443/images/r.sfs,https://10.0.2.101/images/r.sfs " +
      "airroot.manifest=https://[2001:db8::1]/images/r.manifest");
    expect(o.servers).toEqual(["https://boot.example", "https://10.0.2.100:8443/api/", "https://[fe80::1%25eth0]"]);
    expect(o.imageUrls).toEqual(["https://[fe80::1%252]:8443/images/r.sfs", "https://10.0.2.101/images/r.sfs"]);
    expect(o.manifestUrls).toEqual(["https://[2001:db8::1]/images/r.manifest"]);
    // What was refused before is still refused; what was accepted still is.
    expect(opts("airroot.server=https://[fe80::1%25eth0]:8443/").servers).toEqual(["https://[fe80::1%25eth0]:8443/"]);
    expect(opts("airroot.imageurl=https://host-1.example/a@b/r%20x.sfs").imageUrls).toEqual(["https://host-1.example/a@b/r%20x.sfs"]);
  });
});

describe("timeouts: plain decimal digits only", () => {
  for (const [opt, v] of [["dhcptimeout", "1e3"], ["dhcptimeout", "0x10"], ["dhcptimeout", "+5"], ["dhcptimeout", "5.0"], ["dhcptimeout", "030"],
    ["dhcptimeout", "0b11"], ['"airroot.dhcptimeout= 5"', ""], ["roottimeout", "1e3"], ["roottimeout", "0x10"], ["roottimeout", "0o7"],
    ["roottimeout", "Infinity"], ["roottimeout", "-0"], ["roottimeout", "600s"]] as const) {
    const line = opt.startsWith('"') ? opt : `airroot.${opt}=${v}`;
    test(`refused: ${line}`, () => {
      const e = refusal(line);
      expect(e.message).toMatch(/^airroot\.(dhcp|root)timeout=.*: expected whole seconds .*plain decimal digits/);
    });
  }
  test("plain digits are read as seconds", () => {
    expect(opts("airroot.dhcptimeout=45 airroot.roottimeout=0").dhcpTimeoutSec).toBe(45);
    expect(opts("airroot.roottimeout=0").rootTimeoutSec).toBe(0);
    expect(opts("airroot.roottimeout=31536000").rootTimeoutSec).toBe(31536000);
    expect(() => opts("airroot.roottimeout=31536001")).toThrow(CmdlineError);
    expect(() => opts("airroot.dhcptimeout=3601")).toThrow(CmdlineError);
  });
});

describe("airroot.ip: a valid Linux interface name", () => {
  for (const iface of [".", "..", "", "a".repeat(16), "eth/0", "eth0 x", "eth\t0", "é0", "eth0,1"]) {
    const line = `"airroot.ip=${iface}:10.0.0.5/24"`; // quoted: the kernel keeps spaces inside quotes
    test(`refused: ${line}`, () => {
      const e = refusal(line);
      expect(e.message).toMatch(/^airroot\.ip=.*: (".*" is not an interface name \(1-15 letters, digits, _ \. @ -; not \. or \.\.\); )?expected dhcp, none or IFACE:ADDR\/PREFIX\[:GATEWAY\]/);
    });
  }
  test("names with dots, dashes and 15 characters are fine", () => {
    for (const iface of ["eth0.100", "br-lan", "enp0s31f6", "a".repeat(15), "ib0", "...", ".a"]) {
      expect(opts(`airroot.ip=${iface}:10.0.0.5/24:10.0.0.1`).ip).toEqual({ iface, address: "10.0.0.5", prefix: 24, gateway: "10.0.0.1" });
    }
    expect(refusal("airroot.ip=..:10.0.0.5/24").message).toContain('".." is not an interface name');
  });
});
