// Encrypted images: AES-256-XTS (aes-xts-plain64) against OpenSSL's, the manifest's encryption record, `image pack
// --encrypt` (no squashfs magic left, decrypts back to the plain pack byte for byte), the key file and gc.
import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { existsSync, mkdirSync, readFileSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { createHash, generateKeyPairSync } from "node:crypto";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { openDatabase } from "../../src/server/store/db";
import { setProfile } from "../../src/server/store/images";
import { packImage } from "../../src/image/pack";
import { gcImages } from "../../src/image/gc";
import { loadManifest, signManifest, encodePayload, type Manifest } from "../../src/image/manifest";
import { imageFile, manifestFile } from "../../src/image/paths";
import { readImagePublicKey } from "../../src/image/keys";
import { imageKeyFile, imageKeysDir, readImageKey, writeImageKey } from "../../src/image/imagekeys";
import { decryptImageBytes, encryptImageFile, keyCheck, newImageKey } from "../../src/image/encrypt";
import { decryptSector, encryptSector, plain64Iv, xtsRun } from "../../src/image/xts";
import { checkStoredImages } from "../../src/image/check";
import { makeTree } from "./tree";

afterAll(removeScratchDirs);

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const testKey = () => { const k = Buffer.alloc(64); for (let i = 0; i < 64; i++) k[i] = (i * 37 + 11) & 255; return k; };
const testSector = () => { const d = Buffer.alloc(4096); for (let i = 0; i < 4096; i++) d[i] = (i * 7) & 255; return d; };

describe("aes-xts-plain64", () => {
  test("the IV is the 64-bit little-endian number of the sector's first 512-byte unit", () => {
    expect(plain64Iv(0).toString("hex")).toBe("00".repeat(16));
    expect(plain64Iv(3 * 4096).toString("hex")).toBe("18" + "00".repeat(15)); // 4096-byte sector 3 -> IV 24
    expect(plain64Iv(2 ** 40).toString("hex")).toBe("00000080" + "00".repeat(12)); // 2^31
  });

  // Computed with OpenSSL 3.0's AES-256-XTS (through Node.js, 2026-12-04); `openssl enc` itself refuses XTS.
  const OPENSSL = new Map([
    [0, "728ca55247159a79ab1264634ec686a9a4b34e6a7aae544e945c742240504503"],
    [4096, "4fdd8d6414682932bb73f3fd0973fbb0ef6b32e1ef2f4107c591196449047dfb"],
    [3 * 4096, "a30ecfc79d9775229d1b11ddc547283d680b22ac20ff4533d6e484dd95ac364e"],
    [2 ** 40, "d9301ee2ef8c18a9c6d5b6b4d5559a18b96948fc739b476130c22111a21fe7ea"],
  ]);

  test("matches OpenSSL's AES-256-XTS sector by sector, and decrypts back", () => {
    for (const [offset, want] of OPENSSL) {
      const c = encryptSector(testKey(), testSector(), offset);
      expect(sha(c)).toBe(want);
      expect(decryptSector(testKey(), c, offset).equals(testSector())).toBe(true);
    }
  });

  test("matches OpenSSL live (Node.js's crypto is OpenSSL), for random keys and sectors", () => {
    const node = Bun.which("node");
    if (!node) throw new Error("no node (Node.js) on PATH: `make deps` installs Debian's nodejs, whose crypto (OpenSSL) this compares against");
    const key = newImageKey();
    const data = Buffer.from(Array.from({ length: 3 * 4096 }, (_, i) => (i * 131 + 17) & 255));
    const offsets = [0, 8192, 123 * 4096];
    const script = `const c=require("crypto");const k=Buffer.from(process.argv[1],"hex");const d=Buffer.from(process.argv[2],"hex");` +
      `for(const o of JSON.parse(process.argv[3])){const iv=Buffer.alloc(16);iv.writeBigUInt64LE(BigInt(o/512));` +
      `const x=c.createCipheriv("aes-256-xts",k,iv);const s=d;` +
      `console.log(Buffer.concat([x.update(s),x.final()]).toString("hex"))}`;
    const r = Bun.spawnSync([node, "-e", script, key.toString("hex"), data.subarray(0, 4096).toString("hex"), JSON.stringify(offsets)]);
    expect(r.exitCode).toBe(0);
    const lines = r.stdout.toString().trim().split("\n");
    offsets.forEach((o, i) => expect(encryptSector(key, data.subarray(0, 4096), o).toString("hex")).toBe(lines[i]));
  });

  test("a whole run (as image pack encrypts) equals sector-by-sector XTS, both ways", () => {
    const key = newImageKey();
    const run = Buffer.from(Array.from({ length: 5 * 4096 }, (_, i) => (i * 29 + 3) & 255));
    const at = 77 * 4096;
    const whole = xtsRun(true, key, run, at, 4096);
    for (let i = 0; i < 5; i++) {
      const s = i * 4096;
      expect(whole.subarray(s, s + 4096).equals(encryptSector(key, run.subarray(s, s + 4096), at + s))).toBe(true);
    }
    expect(xtsRun(false, key, whole, at, 4096).equals(run)).toBe(true);
    // 512-byte sectors: eight IVs per 4096 bytes.
    const small = xtsRun(true, key, run.subarray(0, 4096), at, 512);
    expect(small.subarray(512, 1024).equals(encryptSector(key, run.subarray(512, 1024), at + 512))).toBe(true);
  });

  test("refuses keys XTS cannot use", () => {
    expect(() => encryptSector(Buffer.alloc(32, 1), testSector(), 0)).toThrow(/64-byte key/);
    expect(() => encryptSector(Buffer.alloc(64, 1), testSector(), 0)).toThrow(/halves are equal/);
  });
});

describe("encrypted image file", () => {
  test("padded to whole 4096-byte sectors, and decrypts back to the input", () => {
    const dir = scratchDir();
    const plain = Buffer.from(Array.from({ length: 3 * 1048576 + 1000 }, (_, i) => (i * 13) & 255));
    writeFileSync(join(dir, "p"), plain);
    const key = newImageKey();
    const e = encryptImageFile(join(dir, "p"), join(dir, "c"), key);
    expect(e).toEqual({ cipher: "aes-xts-plain64", keySize: 64, sectorSize: 4096, plainSize: plain.length, keyCheck: keyCheck(key) });
    const c = readFileSync(join(dir, "c"));
    expect(c.length).toBe(Math.ceil(plain.length / 4096) * 4096);
    const back = decryptImageBytes(key, c, 0);
    expect(back.subarray(0, plain.length).equals(plain)).toBe(true);
    expect(back.subarray(plain.length).every((b) => b === 0)).toBe(true);
    // Each run is encrypted at its own offset: a sector in the middle decrypts on its own.
    const at = 300 * 4096;
    expect(decryptImageBytes(key, c.subarray(at, at + 4096), at).equals(plain.subarray(at, at + 4096))).toBe(true);
    expect(statSync(join(dir, "c")).mode & 0o777).toBe(0o644);
  });
});

describe("manifest encryption record", () => {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const priv = privateKey.export({ type: "pkcs8", format: "pem" }) as string;
  const pub = publicKey.export({ type: "spki", format: "pem" }) as string;
  const base: Manifest = {
    format: 1, digest: "a".repeat(64), size: 8192, chunkSize: 4096, chunks: ["b".repeat(64), "c".repeat(64)],
    created: "2026-12-04T00:00:00.000Z", profile: "compute",
  };
  const enc = { cipher: "aes-xts-plain64" as const, keySize: 64, sectorSize: 4096, plainSize: 8000, keyCheck: "d".repeat(64) };

  test("a plain manifest has no encryption field and the same bytes as before", () => {
    expect(new TextDecoder().decode(encodePayload(base))).toBe(
      `{"format":1,"digest":"${"a".repeat(64)}","size":8192,"chunkSize":4096,"created":"2026-12-04T00:00:00.000Z","profile":"compute","chunks":["${"b".repeat(64)}","${"c".repeat(64)}"]}`);
    expect(loadManifest(signManifest(base, priv), pub).encryption).toBeUndefined();
  });

  test("signed and read back; the record sits before the chunks", () => {
    const m = loadManifest(signManifest({ ...base, encryption: enc }, priv), pub);
    expect(m.encryption).toEqual(enc);
    expect(new TextDecoder().decode(encodePayload(m))).toContain(`"profile":"compute","encryption":{"cipher":"aes-xts-plain64","keySize":64,"sectorSize":4096,"plainSize":8000,"keyCheck":"${"d".repeat(64)}"},"chunks"`);
  });

  test("only what a node can open is accepted", () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ ...enc, cipher: "aes-cbc-essiv:sha256" }, /cipher "aes-cbc-essiv:sha256" is not supported/],
      [{ ...enc, keySize: 32 }, /key size 32 is not supported/],
      [{ ...enc, sectorSize: 8192 }, /sectorSize must be/],
      [{ ...enc, plainSize: 4000 }, /plainSize must be within the last 4096-byte sector/],
      [{ ...enc, plainSize: 9000 }, /plainSize/],
      [{ ...enc, keyCheck: "x" }, /keyCheck/],
      [{ ...enc, key: "e".repeat(128) }, /unknown encryption field "key"/],
    ];
    for (const [e, why] of bad) expect(() => signManifest({ ...base, encryption: e as never }, priv)).toThrow(why);
    expect(() => signManifest({ ...base, size: 8000, chunks: ["b".repeat(64), "c".repeat(64)], encryption: enc }, priv))
      .toThrow(/not a whole number of 4096-byte encryption sectors/);
  });
});

describe("image pack --encrypt", () => {
  const base = scratchDir();
  const state = join(base, "state");
  const tree = makeTree(join(base, "root"));
  const db = openDatabase((mkdirSync(state, { recursive: true }), state)); // a promise: awaited where used
  let digest = "", plainDigest = "";

  test("the stored image is ciphertext: no squashfs magic; it decrypts to the plain pack byte for byte", async () => {
    const plain = await packImage({ rootDir: tree, profile: "plain", stateDir: state, db: await db, now: () => new Date("2026-11-01T00:00:00Z") });
    plainDigest = plain.digest;
    expect(plain.manifest.encryption).toBeUndefined();
    const lines: string[] = [];
    const r = await packImage({ rootDir: tree, profile: "secret", stateDir: state, db: await db, encrypt: true, log: (l) => lines.push(l) });
    digest = r.digest;
    expect(lines.some((l) => /encrypting .* \(aes-xts-plain64, 512-bit key, 4096-byte sectors\)/.test(l))).toBe(true);
    expect(r.digest).not.toBe(plain.digest);
    const c = readFileSync(imageFile(state, digest));
    const p = readFileSync(imageFile(state, plainDigest));
    expect(p.subarray(0, 4).toString("latin1")).toBe("hsqs");
    expect(c.subarray(0, 4).toString("latin1")).not.toBe("hsqs");
    expect(c.indexOf(Buffer.from("hsqs"))).toBe(-1);
    expect(sha(c)).toBe(digest);
    expect(c.length % 4096).toBe(0);
    const key = readImageKey(state, digest)!;
    expect(key.length).toBe(64);
    const back = decryptImageBytes(key, c, 0);
    expect(back.subarray(0, p.length).equals(p)).toBe(true);
    expect(back.length - p.length).toBeLessThan(4096);
    // Sector by sector (the OpenSSL-checked path) too: the superblock, and a sector deep inside.
    expect(decryptSector(key, c.subarray(0, 4096), 0).subarray(0, 4).toString("latin1")).toBe("hsqs");
    const deep = Math.floor(c.length / 8192) * 4096;
    expect(decryptSector(key, c.subarray(deep, deep + 4096), deep).equals(p.subarray(deep, deep + 4096))).toBe(true);
    // The manifest covers the ciphertext, so every chunk check (nodes, mirrors' `image verify`) works unchanged.
    const m = loadManifest(readFileSync(manifestFile(state, digest)), readImagePublicKey(state), { expectDigest: digest, expectSize: c.length });
    expect(m.encryption).toEqual({ cipher: "aes-xts-plain64", keySize: 64, sectorSize: 4096, plainSize: p.length, keyCheck: keyCheck(key) });
    expect(checkStoredImages(join(state, "images"), readImagePublicKey(state)).every((x) => x.ok)).toBe(true);
    expect(readFileSync(manifestFile(state, digest), "utf8")).not.toContain(key.toString("hex"));
  }, 60_000);

  test("the key lives only in STATE/image-keys: 0600 in a 0700 directory, never under images/", () => {
    expect(statSync(imageKeysDir(state)).mode & 0o777).toBe(0o700);
    expect(statSync(imageKeyFile(state, digest)).mode & 0o777).toBe(0o600);
    expect(readImageKey(state, plainDigest)).toBeUndefined();
    const hex = readImageKey(state, digest)!.toString("hex");
    const grep = Bun.spawnSync(["grep", "-rl", hex, join(state, "images"), join(state, "airroot.db")]);
    expect(grep.stdout.toString()).toBe("");
    expect(() => writeImageKey(state, digest, newImageKey())).toThrow(/already exists; an image's key is never replaced/);
  });

  test("image gc removes a removed image's key, and sweeps old orphan keys", async () => {
    await setProfile(await db, "secret", plainDigest, Date.now()); // nothing points at the encrypted image now
    const orphan = "f".repeat(64);
    writeImageKey(state, orphan, newImageKey());
    const old = new Date(Date.now() - 30 * 86_400_000);
    utimesSync(imageKeyFile(state, orphan), old, old);
    const r = await gcImages({ stateDir: state, db: await db, now: Date.now() + 30 * 86_400_000, graceMs: 86_400_000 });
    expect(r.removed).toEqual([digest]);
    expect(existsSync(imageKeyFile(state, digest))).toBe(false);
    expect(existsSync(imageKeyFile(state, orphan))).toBe(false);
    expect(r.tmpRemoved).toContain(`image-keys/${orphan}.key`);
  });
});

describe("airroot image pack --encrypt (CLI)", () => {
  test("says the image is encrypted; --help says where the key lives and who gets it", async () => {
    const base = scratchDir();
    const tree = makeTree(join(base, "root"), "", 100_000);
    const main = join(import.meta.dir, "../../src/cli/main.ts");
    const run = async (args: string[]) => {
      const p = Bun.spawn([process.execPath, main, ...args], { stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
      const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      return { out, err, code };
    };
    const r = await run(["image", "pack", tree, "--profile", "secret", "--state", join(base, "state"), "--encrypt"]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^[0-9a-f]{64} {2}[\d.]+ MiB {2}profile secret {2}encrypted {2}/);
    const digest = r.out.slice(0, 64);
    expect(statSync(imageKeyFile(join(base, "state"), digest)).mode & 0o777).toBe(0o600);
    const help = await run(["image", "pack", "--help"]);
    expect(help.out + help.err).toMatch(/--encrypt\s+encrypt the image with a new random key .*STATE\/image-keys\/<sha256>\.key .*only enrolled nodes get it/s);
  }, 60_000);
});
