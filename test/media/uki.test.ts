// `airroot media uki` without a VM (test/e2e/uki.test.ts boots it under OVMF Secure Boot): the PE holds the stub's
// sections and ours at non-overlapping aligned addresses, the command line as given, the first stage + site cpio as
// one .initrd; the signature verifies with the certificate (sbverify) and not with another; the build is
// reproducible signature included (osslsigncode -time: the same inputs give the same signed bytes, and the signing
// time in the signature is SOURCE_DATE_EPOCH, else the later of 2026-01-01 and the certificate's notBefore; another
// SOURCE_DATE_EPOCH or another input gives other bytes); a changed byte fails sbverify and inspect; errors name the
// step and leave no file behind.
// Signing key: Debian's OVMF test ("snakeoil") key pair, decrypted to the scratch dir.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { kernelDir, REPO } from "../helpers/boot";
import { CpioArchive } from "../../initramfs/cpio";
import { buildUki, inspectUki, parsePe, peChecksum, sectionLayout, signingTime, type UkiOptions } from "../../src/media/uki";
import { DEFAULT_EPOCH } from "../../src/media/build";
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

/** The signingTime attribute of a signed PE's Authenticode signature (Unix seconds), read with openssl asn1parse. */
function signatureTime(file: string): number {
  const b = readFileSync(file);
  const t = parsePe(b).certTable!;
  // WIN_CERTIFICATE: dwLength, wRevision, wCertificateType (2: PKCS#7 SignedData), then the DER.
  expect(b.readUInt16LE(t.off + 6)).toBe(2);
  const der = join(dir, "sig.p7");
  writeFileSync(der, b.subarray(t.off + 8, t.off + b.readUInt32LE(t.off)));
  const lines = run(["openssl", "asn1parse", "-inform", "DER", "-in", der]).out.split("\n");
  const at = lines.findIndex((l) => /OBJECT\s+:signingTime$/.test(l));
  expect(at).toBeGreaterThan(-1);
  const m = lines.slice(at + 1, at + 4).join("\n").match(/(UTCTIME|GENERALIZEDTIME)\s+:(\d+)Z/)!;
  const d = m[1] === "UTCTIME" ? (Number(m[2].slice(0, 2)) < 50 ? "20" : "19") + m[2] : m[2];
  return Date.UTC(+d.slice(0, 4), +d.slice(4, 6) - 1, +d.slice(6, 8), +d.slice(8, 10), +d.slice(10, 12), +d.slice(12, 14)) / 1000;
}

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

  test("reproducible: built again later, the same signed bytes (signing time 2026-01-01, not the clock); the same with SOURCE_DATE_EPOCH through the CLI", async () => {
    const a = await buildUki(opts({ out: join(dir, "r1.efi") }));
    await Bun.sleep(1100);
    const b = await buildUki(opts({ out: join(dir, "r2.efi") }));
    expect(sha(a.out)).toBe(sha(b.out));
    expect(Buffer.compare(readFileSync(a.out), readFileSync(b.out))).toBe(0);
    expect(run(["cmp", a.out, b.out]).code).toBe(0);
    expect(parsePe(readFileSync(a.out)).certTable).toBeDefined();
    // The snakeoil certificate dates from 2020: the default epoch is the later, and it is what the signature says.
    expect(a.signingTime).toBe(DEFAULT_EPOCH);
    expect(signatureTime(a.out)).toBe(DEFAULT_EPOCH);
    // SOURCE_DATE_EPOCH through the CLI: twice the same bytes, with that signing time and PE timestamp.
    const epoch = 1777777777;
    const cliArgs = (out: string) => ["media", "uki", "--key", key, "--cert", SNAKEOIL_CERT, "--site", site, "--kernel", kernel, "--initrd", initrd,
      "--stage1", stage1, "--cmdline", "console=ttyS0 quiet", "--out", out];
    for (const f of ["e1.efi", "e2.efi"]) {
      const r = cli(cliArgs(join(dir, f)), { SOURCE_DATE_EPOCH: String(epoch) });
      expect(r.code).toBe(0);
      expect(r.out).toContain("signing time 2026-05-03T03:09:37Z");
      await Bun.sleep(1100);
    }
    expect(sha(join(dir, "e1.efi"))).toBe(sha(join(dir, "e2.efi")));
    expect(signatureTime(join(dir, "e1.efi"))).toBe(epoch);
    const e = readFileSync(join(dir, "e1.efi"));
    expect(e.readUInt32LE(parsePe(e).peOff + 8)).toBe(epoch);
  }, 120_000);

  test("another SOURCE_DATE_EPOCH, command line, initramfs or first stage: other signed bytes", async () => {
    const base = await buildUki(opts({ out: join(dir, "d0.efi") }));
    const variants: [string, Partial<UkiOptions>][] = [
      ["epoch", { epoch: DEFAULT_EPOCH + 1 }],
      ["cmdline", { cmdline: "console=ttyS1" }],
      ["initrd", { initrd: fakeInitrd(join(dir, "full2.zst"), "another full initramfs") }],
      ["stage1", { stage1: fakeInitrd(join(dir, "stage1b.zst"), "another first stage") }],
    ];
    const seen = new Set([sha(base.out)]);
    for (const [name, o] of variants) {
      const r = await buildUki(opts({ out: join(dir, `d-${name}.efi`), ...o }));
      seen.add(sha(r.out));
      expect(run(["sbverify", "--cert", SNAKEOIL_CERT, r.out]).code).toBe(0);
    }
    expect(seen.size).toBe(1 + variants.length);
    // Only the epoch moves the signing time.
    expect(signatureTime(join(dir, "d-epoch.efi"))).toBe(DEFAULT_EPOCH + 1);
    expect(signatureTime(join(dir, "d-cmdline.efi"))).toBe(DEFAULT_EPOCH);
    // Another command line is another .cmdline section.
    const c = inspectUki(join(dir, "d-cmdline.efi"));
    expect(c.sections.find((s) => s.name === ".cmdline")!.sha256).not.toBe(base.sections.find((s) => s.name === ".cmdline")!.sha256);
  }, 120_000);

  test("sbverify accepts the signature with the site certificate and refuses it with another; a certificate newer than the default epoch: signed at its notBefore, still reproducible", async () => {
    const r = await buildUki(opts({ out: join(dir, "v.efi") }));
    const ok = run(["sbverify", "--cert", SNAKEOIL_CERT, r.out]);
    expect(ok.code).toBe(0);
    expect(ok.out + ok.err).toContain("Signature verification OK");
    const k = join(dir, "new.key"), c = join(dir, "new.pem");
    expect(run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", k, "-out", c, "-days", "30", "-subj", "/CN=a newer site key"]).code).toBe(0);
    const bad = run(["sbverify", "--cert", c, r.out]);
    expect(bad.code).not.toBe(0);
    expect(bad.out + bad.err).toContain("Signature verification failed");
    // Signed with the new key (notBefore: now, after 2026-01-01): the signing time is its notBefore, every time.
    const notBefore = Math.floor(Date.parse(new X509Certificate(readFileSync(c)).validFrom) / 1000);
    expect(notBefore).toBeGreaterThan(DEFAULT_EPOCH);
    const n1 = await buildUki(opts({ out: join(dir, "n1.efi"), key: k, cert: c }));
    await Bun.sleep(1100);
    const n2 = await buildUki(opts({ out: join(dir, "n2.efi"), key: k, cert: c }));
    expect(n1.signingTime).toBe(notBefore);
    expect(signatureTime(n1.out)).toBe(notBefore);
    expect(sha(n1.out)).toBe(sha(n2.out));
    expect(run(["sbverify", "--cert", c, n1.out]).code).toBe(0);
    expect(run(["sbverify", "--cert", SNAKEOIL_CERT, n1.out]).code).not.toBe(0);
    expect(inspectUki(n1.out).signers).toEqual(["/CN=a newer site key"]);
    // signingTime: SOURCE_DATE_EPOCH as given, even before the certificate; else the later of the two.
    expect(signingTime(1000, notBefore)).toBe(1000);
    expect(signingTime(undefined, 1000)).toBe(DEFAULT_EPOCH);
    expect(signingTime(undefined, DEFAULT_EPOCH + 5)).toBe(DEFAULT_EPOCH + 5);
  }, 120_000);

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

  test("SIGTERM during the build (objcopy/osslsigncode): exit 143, no output, no partial file, no scratch directory", async () => {
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
