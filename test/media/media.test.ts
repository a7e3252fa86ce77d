// `airroot media iso|img|inspect` without a VM (test/e2e/media.test.ts boots the result): builds are reproducible
// byte for byte, inspect reads back what went in (and notices a changed file), --node bakes a static address, errors
// name the step and leave no output behind, and the two-stage ISO with the real first stage fits Lenovo XCC's 50 MB
// (50,000,000 bytes, decimal MB).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { kernelDir, REPO } from "../helpers/boot";
import { buildTestStage1 } from "../helpers/media";
import { CpioArchive } from "../../initramfs/cpio";
import { buildImg, buildIso, mediaCmdline, volumeId, XCC_MEDIA_LIMIT, type MediaOptions } from "../../src/media/build";
import { inspectMedia } from "../../src/media/inspect";
import { readNewc, siteCpio } from "../../src/media/contents";

const BUN = join(REPO, "node_modules/.bin/bun");
const cli = (args: string[], env: Record<string, string> = {}) => {
  const r = Bun.spawnSync([BUN, join(REPO, "src/cli/main.ts"), ...args], { stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env }, timeout: 120_000 });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
};
const sha = (f: string) => new Bun.CryptoHasher("sha256").update(readFileSync(f)).digest("hex");

let dir = "", site = "", state = "", kernel = "", initrd = "", stage1 = "";
const opts = (o: Partial<MediaOptions>): MediaOptions => ({
  kernel, initrd, stage1, stages: 2, site, out: join(dir, "out.iso"), version: "test", cmdline: "console=ttyS0", ...o,
});

/** A small zstd initramfs with one file (the media code checks only the format; the e2e test boots real ones). */
function fakeInitrd(out: string, text: string): string {
  const a = new CpioArchive();
  a.add({ type: "file", path: "hello", data: new TextEncoder().encode(text) });
  writeFileSync(`${out}.cpio`, Buffer.concat(a.encode()));
  const r = Bun.spawnSync(["zstd", "-q", "-f", "-3", `${out}.cpio`, "-o", out]);
  if (r.exitCode !== 0) throw new Error("zstd failed");
  return out;
}

beforeAll(() => {
  dir = scratchDir("airroot-media-");
  state = join(dir, "state");
  site = join(dir, "site");
  for (const args of [["serve", "init", "--state", state, "--address", "10.0.2.100"], ["serve", "site-config", "--state", state, "--out", site],
    ["node", "add", "n001", "--mac", "52:54:00:00:00:01", "--ip", "10.0.3.1/16", "--gateway", "10.0.0.1", "--profile", "p", "--state", state],
    ["node", "add", "n002", "--mac", "52:54:00:00:00:02", "--profile", "p", "--state", state]]) {
    const r = cli(args);
    if (r.code !== 0) throw new Error(`airroot ${args.join(" ")}: ${r.err}`);
  }
  kernel = join(kernelDir(), "vmlinuz");
  initrd = fakeInitrd(join(dir, "full.zst"), "the full initramfs");
  stage1 = fakeInitrd(join(dir, "stage1.zst"), "the first stage");
}, 300_000);

afterAll(() => removeScratchDirs());

describe("reproducible", () => {
  test("the same inputs give the same ISO and the same FAT image, byte for byte (built apart in time, from other temp dirs)", async () => {
    const a = await buildIso(opts({ out: join(dir, "a.iso") }));
    await Bun.sleep(1100);
    const b = await buildIso(opts({ out: join(dir, "b.iso") }));
    expect(sha(a.out)).toBe(sha(b.out));
    const i1 = await buildImg(opts({ stages: 1, out: join(dir, "a.img") }));
    await Bun.sleep(1100);
    const i2 = await buildImg(opts({ stages: 1, out: join(dir, "b.img") }));
    expect(sha(i1.out)).toBe(sha(i2.out));
    // SOURCE_DATE_EPOCH changes the file times (so the bytes), not the content.
    const c = await buildIso(opts({ out: join(dir, "c.iso"), epoch: 1700000000 }));
    expect(sha(c.out)).not.toBe(sha(a.out));
    expect(inspectMedia(c.out).initrds).toEqual(inspectMedia(a.out).initrds);
  }, 120_000);

  test("other inputs give another volume UUID (GRUB finds its own media by it)", async () => {
    const a = await buildIso(opts({ out: join(dir, "u1.iso") }));
    const b = await buildIso(opts({ out: join(dir, "u2.iso"), cmdline: "console=ttyS1" }));
    expect(a.manifest.volumeUuid).toMatch(/^20\d\d-\d\d-\d\d-\d\d-\d\d-\d\d-\d\d$/);
    expect(b.manifest.volumeUuid).not.toBe(a.manifest.volumeUuid);
    expect(volumeId("00".repeat(32)).uuid).toBe("2000-01-01-00-00-00-00");
    // The early config in both core images searches for exactly that UUID.
    const grubCfgUuid = inspectMedia(a.out).volumeUuid;
    expect(grubCfgUuid).toBe(a.manifest.volumeUuid);
  }, 60_000);
});

describe("inspect", () => {
  test("ISO: kernel version, initramfs digests, the second stage, command line, site CA fingerprint, four boot methods", async () => {
    const r = await buildIso(opts({ out: join(dir, "i.iso") }));
    const i = inspectMedia(r.out);
    expect(i.mismatches).toEqual([]);
    expect(i.kernel!.version).toMatch(/^6\.\d+\.\d+(-\d+|\+deb\d+)-amd64$/); // bookworm 6.1.0-N-amd64, trixie 6.12.N+deb13-amd64
    expect(i.kernel!.sha256).toBe(sha(kernel));
    expect(i.initrds.map((f) => f.path)).toEqual(["boot/stage1.img", "boot/site.cpio"]);
    expect(i.initrds[0].sha256).toBe(sha(stage1));
    expect(i.stage2).toEqual({ sha256: sha(initrd), size: statSync(initrd).size, urlPath: "/boot/initramfs" });
    expect(i.cmdline).toBe("console=ttyS0 airroot.server=https://10.0.2.100");
    const fp = Bun.spawnSync(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", join(site, "ca.pem")]).stdout.toString();
    expect(fp).toContain(i.siteCa!.sha256);
    expect(i.servers).toEqual(["https://10.0.2.100"]);
    expect(i.bootMethods).toEqual(["BIOS CD (El Torito)", "UEFI CD (El Torito EFI image)", "BIOS USB disk (MBR, boot_hybrid)", "UEFI USB disk (GPT ESP)"]);
    const out = cli(["media", "inspect", r.out]);
    expect(out.code).toBe(0);
    expect(out.out).toContain("second stage:  fetched from each server's /boot/initramfs, accepted only with");
    expect(out.out).toContain("consistent with airroot/media.json");
    expect(JSON.parse(cli(["media", "inspect", r.out, "--json"]).out).stage2.sha256).toBe(sha(initrd));
  }, 60_000);

  test("--secure-boot: Debian's signed shim, GRUB (CD flavour) and MokManager on the ESP, /.disk/info for GRUB to find the media", async () => {
    const r = await buildIso(opts({ out: join(dir, "sb.iso"), secureBoot: true }));
    const i = inspectMedia(r.out);
    expect(i.mismatches).toEqual([]);
    expect(i.bootMethods).toContain("UEFI Secure Boot (Debian's signed shim + GRUB, Debian-signed kernel)");
    expect(inspectMedia(join(dir, "i.iso")).bootMethods).not.toContain("UEFI Secure Boot (Debian's signed shim + GRUB, Debian-signed kernel)");
    const x = join(dir, "sbx");
    Bun.spawnSync(["xorriso", "-osirrox", "on", "-indev", r.out, "-extract", "/.disk/info", join(x, "info")], { stderr: "ignore" });
    expect(readFileSync(join(x, "info"), "utf8")).toBe(`airroot boot media ${r.manifest.volumeUuid}\n`);
  }, 60_000);

  test("the site cpio holds the site directory at /etc/airroot/site, as make initramfs SITE=DIR puts it", () => {
    const entries = readNewc(siteCpio([["ca.pem", new TextEncoder().encode("x")]], { sha256: "a".repeat(64), size: 5, urlPath: "/boot/initramfs" }));
    expect(entries.map((e) => e.path)).toEqual(["etc", "etc/airroot", "etc/airroot/site", "etc/airroot/site/ca.pem", "etc/airroot/stage2"]);
    expect(new TextDecoder().decode(entries[4].data)).toBe(`${"a".repeat(64)} 5 /boot/initramfs\n`);
  });

  test("img: one stage (the full initramfs in it), UEFI; a file changed after the build is reported (exit 3)", async () => {
    const r = await buildImg(opts({ stages: 1, out: join(dir, "t.img") }));
    const i = inspectMedia(r.out);
    expect(i.mismatches).toEqual([]);
    expect(i.kind).toBe("img");
    expect(i.initrds.map((f) => f.path)).toEqual(["boot/initramfs.img", "boot/site.cpio"]);
    expect(i.initrds[0].sha256).toBe(sha(initrd));
    expect(i.stage2).toBeUndefined();
    expect(i.bootMethods).toEqual(["UEFI (\\EFI\\BOOT\\BOOTX64.EFI on FAT: UEFI HTTP boot RAM disk, or a disk)"]);
    const other = fakeInitrd(join(dir, "other.zst"), "not the one");
    Bun.spawnSync(["mcopy", "-o", "-i", r.out, other, "::/boot/initramfs.img"], { env: { ...process.env, MTOOLS_SKIP_CHECK: "1" } });
    const bad = cli(["media", "inspect", r.out]);
    expect(bad.code).toBe(3);
    expect(bad.out).toContain("MISMATCH with airroot/media.json");
    expect(bad.out).toContain("initrds: media.json says");
  }, 60_000);
});

describe("command line", () => {
  test("--node bakes the node's static address (airroot.ip); a DHCP node gets none", () => {
    const a = cli(["media", "iso", "--site", site, "--kernel", kernel, "--initrd", initrd, "--stage1", stage1, "--node", "n001", "--state", state, "--out", join(dir, "n1.iso"), "--cmdline", "console=ttyS0"]);
    expect(a.err).toBe("");
    expect(a.out).toContain("command line: console=ttyS0 airroot.server=https://10.0.2.100 airroot.ip=eth0:10.0.3.1/16:10.0.0.1");
    expect(inspectMedia(join(dir, "n1.iso")).node).toBe("n001");
    const b = cli(["media", "iso", "--site", site, "--kernel", kernel, "--initrd", initrd, "--stage1", stage1, "--node", "n002", "--state", state, "--out", join(dir, "n2.iso")]);
    expect(b.out).toContain("node n002 uses DHCP: no airroot.ip baked in");
    expect(b.out).toContain("command line: console=ttyS0,115200 console=tty0 airroot.server=https://10.0.2.100\n");
    const c = cli(["media", "iso", "--site", site, "--kernel", kernel, "--initrd", initrd, "--stage1", stage1, "--node", "n009", "--state", state, "--out", join(dir, "n9.iso")]);
    expect(c.code).toBe(1);
    expect(c.err).toContain("media node: no node n009 in");
    expect(existsSync(join(dir, "n9.iso"))).toBe(false);
  }, 120_000);

  test("link-local servers stay in the site list only; an explicit airroot.server wins; too long is refused", () => {
    expect(mediaCmdline({ cmdline: "quiet", servers: ["https://[fe80::1]", "https://10.0.0.1"] })).toBe("quiet");
    expect(mediaCmdline({ cmdline: "airroot.server=https://10.9.9.9", servers: ["https://10.0.0.1"] })).toBe("airroot.server=https://10.9.9.9");
    expect(() => mediaCmdline({ cmdline: "x".repeat(2100), servers: [] })).toThrow(/media cmdline: the kernel command line is 2100 bytes/);
  });
});

describe("errors", () => {
  test("each names the step and the file and says what to do; no output and no partial file is left", async () => {
    const out = join(dir, "fail", "x.iso");
    mkdirSync(join(dir, "fail"));
    const cases: [Partial<MediaOptions>, RegExp][] = [
      [{ kernel: join(dir, "missing") }, /^media kernel: the kernel .*missing does not exist; run `make initramfs` \(dist\/vmlinuz\) or give --kernel$/],
      [{ kernel: initrd }, /^media kernel: .*full\.zst: not an x86 bzImage \(no HdrS header\); give an x86-64 Linux bzImage with --kernel$/],
      [{ stage1: kernel }, /^media stage1: .*vmlinuz is not a zstd, xz, gzip or cpio initramfs$/],
      [{ site: dir }, /^media site: .* has no ca\.pem: not a site directory; make it with `airroot serve site-config/],
    ];
    for (const [o, re] of cases) {
      await expect(buildIso(opts({ ...o, out }))).rejects.toThrow(re);
      expect(readdirSync(join(dir, "fail"))).toEqual([]);
    }
    // --initrd given: a fresh checkout has no dist/initramfs.cpio.zst, and the error wanted here is the next step's.
    const r = cli(["media", "iso", "--site", site, "--kernel", kernel, "--initrd", initrd, "--out", join(dir, "nodir", "x.iso")]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/media (stage1|output)/);
  }, 60_000);

  test("--help on every media command", () => {
    for (const c of [["media"], ["media", "iso"], ["media", "img"], ["media", "inspect"]]) {
      const r = cli([...c, "--help"]);
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/USAGE/);
    }
    expect(cli(["media", "iso", "--help"]).out).toContain("--stages");
  });
});

describe("size", () => {
  test(`the two-stage ISO with the real first stage (zstd -19) is under Lenovo XCC's limit of ${XCC_MEDIA_LIMIT} bytes`, async () => {
    const real = join(REPO, "dist/initramfs-stage1.cpio.zst");
    const s1 = existsSync(real) ? real : buildTestStage1(join(dir, "stage1-19.zst"), kernelDir(), 19);
    const r = await buildIso(opts({ stage1: s1, out: join(dir, "size.iso") }));
    console.log(`two-stage ISO: ${r.bytes} bytes (kernel ${statSync(kernel).size}, first stage ${statSync(s1).size})`);
    expect(r.bytes).toBeLessThanOrEqual(XCC_MEDIA_LIMIT);
    const sb = await buildIso(opts({ stage1: s1, out: join(dir, "size-sb.iso"), secureBoot: true }));
    console.log(`two-stage ISO with --secure-boot: ${sb.bytes} bytes`);
    expect(sb.bytes).toBeLessThanOrEqual(XCC_MEDIA_LIMIT);
  }, 300_000);
});
