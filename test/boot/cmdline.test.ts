// Kernel command line parsing and airroot.* options: examples, bad values, fuzzing.
import { describe, expect, test } from "bun:test";
import { bootOptions, CmdlineError, consoleFromCmdline, moduleParams, optionTableMarkdown, OPTION_DOCS, parseCmdline } from "../../src/boot/cmdline";

describe("parseCmdline", () => {
  test("splits params, flags and quoted values like the kernel", () => {
    const c = parseCmdline('BOOT_IMAGE=/vmlinuz root=/dev/x quiet airroot.shell foo="a b  c" "bar=d e" -- single x\n');
    expect(c.params).toEqual([
      { name: "BOOT_IMAGE", value: "/vmlinuz" },
      { name: "root", value: "/dev/x" },
      { name: "quiet", value: undefined },
      { name: "airroot.shell", value: undefined },
      { name: "foo", value: "a b  c" },
      { name: "bar", value: "d e" },
    ]);
    expect(c.initArgs).toEqual(["single", "x"]);
  });

  test("unterminated quote runs to the end; empty line gives nothing", () => {
    expect(parseCmdline('a="b c').params).toEqual([{ name: "a", value: "b c" }]);
    expect(parseCmdline("   \n").params).toEqual([]);
  });

  test("fuzz: random and truncated inputs never throw unexpectedly and keep invariants", () => {
    const alphabet = 'ab=". \t\n-_,:/%\u00e9\0airroot.';
    let seed = 12345;
    const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
    const base = 'airroot.server=https://10.0.2.2/,https://[fe80::1%252]/ airroot.ip=eth0:10.0.0.5/24:10.0.0.1 x="y z"';
    for (let iter = 0; iter < 3000; iter++) {
      let s: string;
      if (iter % 3 === 0) s = base.slice(0, rnd(base.length + 1));
      else s = Array.from({ length: rnd(80) }, () => alphabet[rnd(alphabet.length)]).join("");
      const c = parseCmdline(s);
      for (const p of c.params) {
        expect(p.name.includes(" ") && !s.includes('"')).toBe(false);
        expect(p.name.includes('"')).toBe(false);
      }
      try { bootOptions(c); } catch (e) { expect(e).toBeInstanceOf(CmdlineError); }
      consoleFromCmdline(c);
    }
  });

  test("rejects absurdly long input with a clear error", () => {
    expect(() => parseCmdline("a".repeat(70000))).toThrow(/more than/);
  });
});

describe("bootOptions", () => {
  test("defaults", () => {
    const { options, unknown } = bootOptions(parseCmdline("console=ttyS0 quiet"));
    expect(options).toMatchObject({ servers: [], shell: false, poweroff: false, imageMethod: "ondemand", ip: "dhcp",
      dhcpTimeoutSec: 30, overlaySize: "50%", init: "/sbin/init", debugSshd: true, skip: [], noTpm: "refuse", rootTimeoutSec: undefined, untether: { to: "off" } });
    expect(bootOptions(parseCmdline("airroot.untether=ram")).options.untether).toEqual({ to: "ram" });
    expect(unknown).toEqual([]);
  });

  test("all options, last one wins, dashes equal underscores", () => {
    const { options, unknown } = bootOptions(parseCmdline(
      "airroot.server=https://a/ airroot.server=https://10.0.2.100/x,https://[::1]:8443/ airroot.shell airroot.imagemethod=copy " +
      "airroot.ip=eth0:172.30.1.5/16:172.30.0.1 airroot.dhcptimeout=5 airroot.modules=e1000e,igb airroot.blacklist=nouveau " +
      "airroot.overlaysize=4g airroot.rootimage=/root.sfs airroot.init=/bin/sh airroot.skip=console,net airroot.debugsshd=off " +
      "airroot.debug airroot.rescue=poweroff airroot.imageurl=https://10.0.2.100/r.sfs,https://10.0.2.101/r.sfs " +
      "airroot.manifest=https://10.0.2.100/r.manifest,https://10.0.2.101/r.manifest airroot.notpm=warn airroot.roottimeout=120 airroot.frobnicate=1 " +
      "airroot.untether=ram airroot.untether=disk:/dev/nvme0n1p3"));
    expect(options).toEqual({
      servers: ["https://10.0.2.100/x", "https://[::1]:8443/"], shell: true, poweroff: false, imageMethod: "copy",
      ip: { iface: "eth0", address: "172.30.1.5", prefix: 16, gateway: "172.30.0.1" }, dhcpTimeoutSec: 5,
      modules: ["e1000e", "igb"], blacklist: ["nouveau"], overlaySize: "4g", rootImage: "/root.sfs", init: "/bin/sh",
      skip: ["console", "net"], debugSshd: false, debug: true, rescue: "poweroff",
      imageUrls: ["https://10.0.2.100/r.sfs", "https://10.0.2.101/r.sfs"], manifestUrls: ["https://10.0.2.100/r.manifest", "https://10.0.2.101/r.manifest"], noTpm: "warn",
      rootTimeoutSec: 120, untether: { to: "disk", device: "/dev/nvme0n1p3" },
    });
    expect(unknown).toEqual(["airroot.frobnicate"]);
  });

  test("bad values name the option", () => {
    const bad = ["airroot.server=http://x/", "airroot.server=nope", "airroot.imagemethod=nfs", "airroot.ip=eth0:300.1.1.1/24",
      "airroot.ip=10.0.0.1", "airroot.notpm=maybe", "airroot.dhcptimeout=0", "airroot.dhcptimeout=abc", "airroot.modules=a/b", "airroot.overlaysize=lots",
      "airroot.rootimage=relative", "airroot.shell=maybe", "airroot.rescue=reboot",
      "airroot.imageurl=https://x/", "airroot.imageurl=http://x/r.sfs", "airroot.manifest=https://a/m,http://b/m",
      "airroot.roottimeout=-1", "airroot.roottimeout=1.5", "airroot.roottimeout=forever", "airroot.roottimeout", "airroot.roottimeout=",
      "airroot.untether=disk", "airroot.untether=disk:", "airroot.untether=disk:sda", "airroot.untether=disk:/dev/../etc/passwd",
      "airroot.untether=tmpfs", "airroot.untether",
      "airroot.untether=ram airroot.untetherrate=0", "airroot.untether=ram airroot.untetherrate=-5", "airroot.untether=ram airroot.untetherrate=40M",
      "airroot.untether=ram airroot.untetherrate=1e3", "airroot.untether=ram airroot.untetherrate=200000", "airroot.untether=ram airroot.untetherrate",
      "airroot.untetherrate=40"];
    for (const b of bad) expect(() => bootOptions(parseCmdline(b))).toThrow(new RegExp((b.includes("untetherrate") ? "airroot.untetherrate" : b.split("=")[0]).replace(".", "\\.")));
  });

  test("airroot.untetherrate caps the fill in MB/s, with untether only; the root daemon gets --fill-rate", async () => {
    expect(bootOptions(parseCmdline("airroot.untether=ram airroot.untetherrate=40")).options.untether).toEqual({ to: "ram", rateMBps: 40 });
    expect(bootOptions(parseCmdline("airroot.untether=disk:/dev/vdb airroot.untetherrate=12.5")).options.untether)
      .toEqual({ to: "disk", device: "/dev/vdb", rateMBps: 12.5 });
    const { rootMountArgs } = await import("../../src/boot/image.ts");
    const args = rootMountArgs({ urls: ["https://a/r.sfs"], caFile: "ca.pem", manifestUrl: "/m", imageKeyFile: "/k", fillPath: "/f", fillRateMBps: 12.5 });
    expect(args.join(" ")).toContain("--fill /f --untether-loop auto --fill-rate 12.5");
    expect(rootMountArgs({ urls: ["https://a/r.sfs"], caFile: "ca.pem", manifestUrl: "/m", imageKeyFile: "/k", fillPath: "/f" })).not.toContain("--fill-rate");
  });

  test("airroot.roottimeout=0 gives up at the first refusal; link-local URLs may name their zone (RFC 6874)", () => {
    expect(bootOptions(parseCmdline("airroot.roottimeout=0")).options.rootTimeoutSec).toBe(0);
    const { options } = bootOptions(parseCmdline("airroot.server=https://[fe80::1%25eth0] airroot.imageurl=https://[fe80::1%25eth0]:8443/r.sfs"));
    expect(options.servers).toEqual(["https://[fe80::1%25eth0]"]);
    expect(options.imageUrls).toEqual(["https://[fe80::1%25eth0]:8443/r.sfs"]);
  });

  test("console= and module parameters", () => {
    const c = parseCmdline("console=tty0 console=ttyS1,57600n8 e1000e.InterruptThrottleRate=1 e1000e.debug igb.x=1");
    expect(consoleFromCmdline(c)).toEqual({ name: "ttyS1", baud: 57600 });
    expect(consoleFromCmdline(parseCmdline("console=hvc0"))).toEqual({ name: "hvc0" });
    expect(consoleFromCmdline(parseCmdline("quiet"))).toBeUndefined();
    expect(moduleParams(c, "e1000e")).toBe("InterruptThrottleRate=1 debug");
  });

  test("every option is documented in the table", () => {
    const md = optionTableMarkdown();
    for (const o of OPTION_DOCS) expect(md).toContain(o.name);
  });
});

test("the README's kernel command line table is exactly the one generated from OPTION_DOCS", () => {
  const readme = require("node:fs").readFileSync(require("node:path").join(import.meta.dir, "../../README.md"), "utf8");
  expect(readme).toContain(optionTableMarkdown().trimEnd() + "\n\n");
});
