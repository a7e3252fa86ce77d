// `airroot media uki` without a VM (test/e2e/uki.test.ts boots it under OVMF Secure Boot): the PE holds the stub's
// sections and ours at non-overlapping aligned addresses, the command line as given, the first stage + site cpio as
// one .initrd; the signature verifies with the certificate (sbverify); the build is reproducible (sbsign puts a
// signing time into the signature, so two builds differ only in the signature and the PE checksum: without it they
// are the same bytes); a changed byte fails sbverify and inspect; errors name the step and leave no file behind.
// Signing key: Debian's OVMF test ("snakeoil") key pair, decrypted to the scratch dir.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { kernelDir, REPO } from "../helpers/boot";
import { CpioArchive } from "../../initramfs/cpio";
import { buildUki, inspectUki, parsePe, peChecksum, sectionLayout, type UkiOptions } from "../../src/media/uki";
import { readNewc } from "../../src/media/contents";

const BUN = join(REPO, "node_modules/.bin/bun");
const SNAKEOIL_KEY = "/usr/share/ovmf/PkKek-1-snakeoil.key";
const SNAKEOIL_CERT = "/usr/share/ovmf/PkKek-1-snakeoil.pem";
const cli = (args: string[], env: Record<string, string> = {}) => {
  const r = Bun.spawnSync([BUN, join(REPO, "src/cli/main.ts"), ...args], { stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env }, timeout: 120_000 });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
};
const run = (args: string[]) => {
  const r = Bun.spawnSync(args, { stdout: "pipe", stderr: "pipe", timeout: 60_000 });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
};
const sha = (f: string) => new Bun.CryptoHasher("sha256").update(readFileSync(f)).digest("hex");

let dir = "", site = "", kernel = "", initrd = "", stage1 = "", key = "";
const opts = (o: Partial<UkiOptions>): UkiOptions => ({
  kernel, initrd, stage1, stages: 2, site, key, cert: SNAKEOIL_CERT, out: join(dir, "out.efi"), version: "test", cmdline: "console=ttyS0 quiet", ...o,
});

function fakeInitrd(out: string, text: string): string {
  const a = new CpioArchive();
  a.add({ type: "file", path: "hello", data: new TextEncoder().encode(text) });
  writeFileSync(`${out}.cpio`, Buffer.concat(a.encode()));
  if (run(["zstd", "-q", "-f", "-3", `${out}.cpio`, "-o", out]).code !== 0) throw new Error("zstd failed");
  return out;
}

beforeAll(() => {
  dir = scratchDir("airroot-uki-");
  const state = join(dir, "state");
  site = join(dir, "site");
  for (const args of [["serve", "init", "--state", state, "--address", "10.0.2.100"], ["serve", "site-config", "--state", state, "--out", site]]) {
    const r = cli(args);
    if (r.code !== 0) throw new Error(`airroot ${args.join(" ")}: ${r.err}`);
  }
  key = join(dir, "db.key");
  const r = run(["openssl", "pkey", "-in", SNAKEOIL_KEY, "-passin", "pass:snakeoil", "-out", key]);
  if (r.code !== 0) throw new Error(r.err);
  kernel = join(kernelDir(), "vmlinuz");
  initrd = fakeInitrd(join(dir, "full.zst"), "the full initramfs");
  stage1 = fakeInitrd(join(dir, "stage1.zst"), "the first stage, odd length!");
}, 300_000);

afterAll(() => removeScratchDirs());

describe("the image", () => {
  test("the stub's sections and ours (.osrel .cmdline .airroot .linux .initrd) at aligned, non-overlapping addresses; cmdline, kernel and initrd as given", async () => {
    const r = await buildUki(opts({ out: join(dir, "a.efi") }));
    const h = run(["objdump", "-h", r.out]).out;
    for (const s of [".text", ".sdmagic", ".osrel", ".cmdline", ".airroot", ".linux", ".initrd"]) expect(h).toContain(` ${s} `);
    const b = readFileSync(r.out);
    const pe = parsePe(b);
    const secs = [...pe.sections].sort((x, y) => x.va - y.va);
    for (let i = 1; i < secs.length; i++) expect(secs[i].va).toBeGreaterThanOrEqual(secs[i - 1].va + secs[i - 1].virtualSize);
    for (const s of r.sections) expect(s.vma % 4096).toBe(0);
    const data = (n: string) => { const s = pe.sections.find((x) => x.name === n)!; return b.subarray(s.rawPtr, s.rawPtr + s.virtualSize); };
    expect(data(".cmdline").toString()).toBe("console=ttyS0 quiet airroot.server=https://10.0.2.100");
    expect(Buffer.compare(data(".linux"), readFileSync(kernel))).toBe(0);
    // .initrd: the first stage, zero-padded to 4 bytes, then the site cpio with the digest of the full initramfs.
    const st1 = readFileSync(stage1), init = data(".initrd");
    expect(Buffer.compare(init.subarray(0, st1.length), st1)).toBe(0);
    const cpioAt = Math.ceil(st1.length / 4) * 4;
    expect([...init.subarray(st1.length, cpioAt)].every((x) => x === 0)).toBe(true);
    const files = readNewc(init.subarray(cpioAt));
    expect(files.map((f) => f.path)).toContain("etc/airroot/site/ca.pem");
    expect(new TextDecoder().decode(files.find((f) => f.path === "etc/airroot/stage2")!.data)).toBe(`${sha(initrd)} ${readFileSync(initrd).length} /boot/initramfs\n`);
    expect(data(".osrel").toString()).toContain('NAME="airroot"');
    expect(peChecksum(b, pe.checksumOff)).toBe(b.readUInt32LE(pe.checksumOff));
    const v = run(["sbverify", "--cert", SNAKEOIL_CERT, r.out]);
    expect(v.code).toBe(0);
    expect(v.out + v.err).toContain("Signature verification OK");
    const i = inspectUki(r.out);
    expect(i.mismatches).toEqual([]);
    expect(i.signers).toEqual(["/C=US/ST=Colorado/L=Fort Collins/O=SnakeOil"]);
    expect(i.manifest!.initrd.map((p) => p.name)).toEqual(["stage1.zst", "site.cpio"]);
  }, 60_000);

  test("reproducible: built again later, it differs only in the signature (sbsign's signing time) and the PE checksum; without the signature, the same bytes", async () => {
    const a = await buildUki(opts({ out: join(dir, "r1.efi") }));
    await Bun.sleep(1100);
    const b = await buildUki(opts({ out: join(dir, "r2.efi") }));
    const A = readFileSync(a.out), B = readFileSync(b.out);
    expect(A.length).toBe(B.length);
    const pe = parsePe(A);
    expect(pe.certTable).toBeDefined();
    const diff: number[] = [];
    for (let i = 0; i < A.length; i++) if (A[i] !== B[i]) diff.push(i);
    for (const i of diff) expect(i >= pe.certTable!.off || (i >= pe.checksumOff && i < pe.checksumOff + 4)).toBe(true);
    for (const f of [a.out, b.out]) { copyFileSync(f, `${f}.bare`); expect(run(["sbattach", "--remove", `${f}.bare`]).code).toBe(0); }
    expect(sha(`${a.out}.bare`)).toBe(sha(`${b.out}.bare`));
    // Another command line is another image.
    const c = await buildUki(opts({ out: join(dir, "r3.efi"), cmdline: "console=ttyS1" }));
    expect(c.sections.find((s) => s.name === ".cmdline")!.sha256).not.toBe(a.sections.find((s) => s.name === ".cmdline")!.sha256);
  }, 60_000);

  test("one byte changed in .initrd: sbverify fails and inspect reports it (exit 3)", async () => {
    const r = await buildUki(opts({ out: join(dir, "t.efi") }));
    const b = readFileSync(r.out);
    const s = parsePe(b).sections.find((x) => x.name === ".initrd")!;
    b[s.rawPtr + 100] ^= 1;
    writeFileSync(join(dir, "t2.efi"), b);
    expect(run(["sbverify", "--cert", SNAKEOIL_CERT, join(dir, "t2.efi")]).code).not.toBe(0);
    const i = cli(["media", "inspect", join(dir, "t2.efi")]);
    expect(i.code).toBe(3);
    expect(i.out).toMatch(/initrd: \.airroot says/);
    const ok = cli(["media", "inspect", r.out]);
    expect(ok.code).toBe(0);
    expect(ok.out).toContain("airroot unified kernel image (UKI)");
    expect(ok.out).toContain("signed by:     /C=US/ST=Colorado/L=Fort Collins/O=SnakeOil");
    expect(ok.out).toContain("command line:  console=ttyS0 quiet airroot.server=https://10.0.2.100");
  }, 60_000);

  test("--stages 1 without --site: the full initramfs alone, the default console command line", async () => {
    const r = cli(["media", "uki", "--key", key, "--cert", SNAKEOIL_CERT, "--kernel", kernel, "--initrd", initrd, "--out", join(dir, "one.efi")]);
    expect(r.code).toBe(0);
    const i = inspectUki(join(dir, "one.efi"));
    expect(i.mismatches).toEqual([]);
    expect(i.manifest!.initrd).toEqual([{ name: "full.zst", sha256: sha(initrd), size: readFileSync(initrd).length }]);
    expect(i.manifest!.stage2).toBeUndefined();
    expect(i.cmdline).toBe("console=ttyS0,115200 console=tty0");
  }, 60_000);

  test("sectionLayout: after the last section, page-aligned, in order", () => {
    const l = sectionLayout({ peOff: 0, checksumOff: 0, sectionAlignment: 0x200, sections: [{ name: ".text", va: 0x4000, virtualSize: 0x1234, rawSize: 0x1400, rawPtr: 0x400 }] },
      [[".a", 1], [".b", 0x1000], [".c", 5]]);
    expect(l.map((x) => x.vma)).toEqual([0x6000, 0x7000, 0x8000]);
  });
});

describe("errors", () => {
  test("each names the step and the file and says what to do; no output and no partial file is left", () => {
    const other = join(dir, "other.key");
    run(["openssl", "genrsa", "-out", other, "2048"]);
    const base = ["media", "uki", "--site", site, "--kernel", kernel, "--initrd", initrd, "--stage1", stage1, "--out", join(dir, "bad.efi")];
    const cases: [string[], RegExp][] = [
      [["--key", SNAKEOIL_KEY, "--cert", SNAKEOIL_CERT], /media key: .*PkKek-1-snakeoil\.key is encrypted.*openssl pkey/],
      [["--key", other, "--cert", SNAKEOIL_CERT], /media key: .*other\.key is not the key of .*PkKek-1-snakeoil\.pem/],
      [["--key", join(dir, "nope.key"), "--cert", SNAKEOIL_CERT], /media key: the Secure Boot signing key .*nope\.key does not exist/],
      [["--key", key, "--cert", key], /media key: .*db\.key is not a PEM certificate/],
      [["--key", key, "--cert", SNAKEOIL_CERT, "--stub", join(dir, "nostub.efi")], /media stub: .*nostub\.efi does not exist; apt-get install systemd-boot-efi/],
      [["--key", key, "--cert", SNAKEOIL_CERT, "--stub", initrd], /media stub: .*full\.zst: not a PE file/],
      [["--key", key, "--cert", SNAKEOIL_CERT, "--kernel", initrd], /media kernel: .*full\.zst: not an x86 bzImage/],
      [["--key", key, "--cert", SNAKEOIL_CERT, "--stages", "3"], /media options: --stages 3: expected 1 or 2/],
    ];
    for (const [extra, want] of cases) {
      const r = cli([...base, ...extra]);
      expect(r.code).not.toBe(0);
      expect(r.err + r.out).toMatch(want);
    }
    const noSite = cli(["media", "uki", "--key", key, "--cert", SNAKEOIL_CERT, "--kernel", kernel, "--initrd", initrd, "--stages", "2", "--out", join(dir, "bad.efi")]);
    expect(noSite.err + noSite.out).toMatch(/media site: two stages need --site/);
    const noDir = cli(["media", "uki", "--key", key, "--cert", SNAKEOIL_CERT, "--kernel", kernel, "--initrd", initrd, "--out", join(dir, "no/such/x.efi")]);
    expect(noDir.err + noDir.out).toMatch(/media output: the directory .* does not exist/);
    expect(existsSync(join(dir, "bad.efi"))).toBe(false);
    expect(readdirSync(dir).filter((f) => f.includes(".partial-"))).toEqual([]);
  }, 120_000);

  test("SIGTERM during the build (objcopy/sbsign): exit 143, no output, no partial file, no scratch directory", async () => {
    const out = join(dir, "sig.efi");
    const before = readdirSync(tmpdir()).filter((f) => f.startsWith("airroot-uki-")).length;
    const p = Bun.spawn([BUN, join(REPO, "src/cli/main.ts"), "media", "uki", "--key", key, "--cert", SNAKEOIL_CERT, "--site", site,
      "--kernel", kernel, "--initrd", initrd, "--stage1", stage1, "--out", out], { stdout: "pipe", stderr: "pipe" });
    const reader = p.stdout.getReader();
    let seen = "";
    const deadline = Date.now() + 30_000;
    while (!seen.includes("objcopy:") && Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += new TextDecoder().decode(value);
    }
    expect(seen).toContain("objcopy:");
    p.kill("SIGTERM");
    const t = setTimeout(() => p.kill("SIGKILL"), 30_000);
    const code = await p.exited;
    clearTimeout(t);
    expect(code).toBe(143);
    expect(existsSync(out)).toBe(false);
    expect(readdirSync(dir).filter((f) => f.includes(".partial-"))).toEqual([]);
    expect(readdirSync(tmpdir()).filter((f) => f.startsWith("airroot-uki-")).length).toBeLessThanOrEqual(before);
  }, 60_000);

  test("--help", () => {
    const r = cli(["media", "uki", "--help"]);
    expect(r.code).toBe(0);
    const t = r.out + r.err;
    for (const w of ["--key", "--cert", "--site", "--cmdline", "--kernel", "--initrd", "--stage1", "--stages", "--out", "unified kernel image"]) expect(t).toContain(w);
  });
});
