// EFI signature lists for firmware (`airroot serve firmware-ca`): the same bytes as sbsigntool's sbsiglist for the
// same certificate and owner, readable back, one list per certificate; the CLI writes the site CA whole; bad input
// (no certificate, a truncated or inconsistent list) is refused with a clear error, never misread (random mutations).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { AIRROOT_OWNER_GUID, EFI_CERT_X509_GUID, parseSignatureLists, pemCertificates, x509SignatureLists } from "../../src/pki/esl";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const BUN = join(import.meta.dir, "../../node_modules/.bin/bun");
let dir = "", state = "", caPem = "";

beforeAll(() => {
  dir = scratchDir();
  state = join(dir, "state");
  expect(Bun.spawnSync([BUN, MAIN, "serve", "init", "--state", state, "--address", "10.0.2.100"]).exitCode).toBe(0);
  caPem = readFileSync(join(state, "keys/site-ca.crt"), "utf8");
}, 30_000);
afterAll(removeScratchDirs);

test("the site CA as a signature list: the same bytes as sbsiglist, and it reads back", () => {
  const [der] = pemCertificates(caPem);
  const esl = x509SignatureLists([der!]);
  writeFileSync(join(dir, "ca.der"), der!);
  const r = Bun.spawnSync(["sbsiglist", "--owner", AIRROOT_OWNER_GUID, "--type", "x509", "--output", join(dir, "ref.esl"), join(dir, "ca.der")]);
  expect(r.exitCode).toBe(0);
  expect(esl.equals(readFileSync(join(dir, "ref.esl")))).toBe(true);
  expect(parseSignatureLists(esl)).toEqual([{ type: EFI_CERT_X509_GUID, owner: AIRROOT_OWNER_GUID, data: der! }]);
});

test("two certificates: two lists (their sizes differ), both read back in order", () => {
  const a = pemCertificates(caPem)[0]!, b = Buffer.concat([a, Buffer.from([0])]);
  const back = parseSignatureLists(x509SignatureLists([a, b]));
  expect(back.map((e) => e.data.length)).toEqual([a.length, b.length]);
});

test("bad input: no certificate, not DER, truncated or inconsistent lists are refused (2000 random mutations never misread)", () => {
  expect(() => pemCertificates("hello")).toThrow("no PEM CERTIFICATE block found");
  expect(() => x509SignatureLists([Buffer.from("not a certificate at all")])).toThrow("not a DER certificate");
  const good = x509SignatureLists(pemCertificates(caPem));
  expect(() => parseSignatureLists(good.subarray(0, 20))).toThrow("truncated header");
  for (let i = 0; i < 2000; i++) {
    const m = Buffer.from(good);
    const n = 1 + (i % 4);
    for (let k = 0; k < n; k++) m[Math.floor(Math.random() * 28)] = randomBytes(1)[0]!; // the header
    const cut = i % 3 === 0 ? m.subarray(0, Math.floor(Math.random() * m.length)) : m;
    try {
      const entries = parseSignatureLists(cut);
      // Whatever parses must lie inside the input and add up to it.
      for (const e of entries) expect(e.data.length).toBeLessThanOrEqual(cut.length);
    } catch (e) {
      expect((e as Error).message).toMatch(/^signature list at \d+: /);
    }
  }
});

test("the CLI: esl and der of the site CA, written whole; a bad format and a missing state are refused", () => {
  const cli = (...a: string[]) => { const r = Bun.spawnSync([BUN, MAIN, "serve", "firmware-ca", ...a], { stdout: "pipe", stderr: "pipe" }); return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() }; };
  const e = cli("--state", state, "--out", join(dir, "site-ca.esl"));
  expect(e.code).toBe(0);
  expect(e.out).toMatch(/^wrote .*site-ca\.esl: the site CA as an EFI signature list \(\d+ bytes\)/);
  expect(parseSignatureLists(readFileSync(join(dir, "site-ca.esl")))[0]!.data.equals(pemCertificates(caPem)[0]!)).toBe(true);
  const d = cli("--state", state, "--format", "der", "--out", join(dir, "site-ca.der"));
  expect(d.code).toBe(0);
  expect(readFileSync(join(dir, "site-ca.der")).equals(pemCertificates(caPem)[0]!)).toBe(true);
  const bad = cli("--state", state, "--format", "p12", "--out", join(dir, "x"));
  expect(bad.code).not.toBe(0);
  expect(bad.err).toContain('--format "p12": use esl or der');
  const none = cli("--state", join(dir, "nope"), "--out", join(dir, "y"));
  expect(none.err).toMatch(/cannot read \S+nope\/keys\/site-ca\.crt: is \S+nope a server state dir/);
  expect(cli("--help").out).toContain("--format");
});
