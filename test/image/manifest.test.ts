// Manifest encoding, signing and strict parsing of untrusted copies (including random and mutated inputs).
import { describe, expect, test } from "bun:test";
import { generateKeyPairSync, createHash } from "node:crypto";
import { loadManifest, signManifest, validateManifest, ManifestError, type Manifest, assertImageSize } from "../../src/image/manifest";
import { manifestVerifier, benchVerify } from "../../src/image/verify";

function keys() {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return {
    priv: privateKey.export({ type: "pkcs8", format: "pem" }) as string,
    pub: publicKey.export({ type: "spki", format: "pem" }) as string,
  };
}
const K = keys();
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

function sample(size = 10_000, chunkSize = 4096): { m: Manifest; data: Uint8Array } {
  const data = new Uint8Array(size);
  let x = 1;
  for (let i = 0; i < size; i++) { x = (Math.imul(x, 1103515245) + 12345) >>> 0; data[i] = x >>> 24; } // no repeating period
  const chunks: string[] = [];
  for (let o = 0; o < size; o += chunkSize) chunks.push(sha(data.subarray(o, o + chunkSize)));
  return { data, m: { format: 1, digest: sha(data), size, chunkSize, chunks, created: "2026-11-25T17:00:00.000Z", profile: "compute" } };
}

describe("manifest", () => {
  test("sign then load round-trips, with canonical bytes", () => {
    const { m } = sample();
    const bytes = signManifest(m, K.priv);
    expect(loadManifest(bytes, K.pub)).toEqual(m);
    expect(signManifest(m, K.priv)).toEqual(bytes); // ed25519 is deterministic: same manifest, same file
    const text = new TextDecoder().decode(bytes);
    expect(text.split("\n").length).toBe(4);
    expect(text.startsWith("airroot-manifest v1\n{\"format\":1,\"digest\":")).toBe(true);
  });

  test("expected digest and size are enforced", () => {
    const { m } = sample();
    const bytes = signManifest(m, K.priv);
    expect(loadManifest(bytes, K.pub, { expectDigest: m.digest, expectSize: m.size }).digest).toBe(m.digest);
    expect(() => loadManifest(bytes, K.pub, { expectDigest: "0".repeat(64) })).toThrow(/stale or substituted/);
    expect(() => loadManifest(bytes, K.pub, { expectSize: m.size + 1 })).toThrow(/size mismatch/);
    expect(() => assertImageSize(m, 5, "https://127.0.0.2/x")).toThrow(/127\.0\.0\.2.*5 bytes/);
  });

  test("tampered payload, wrong key and foreign signature are refused", () => {
    const { m } = sample();
    const text = new TextDecoder().decode(signManifest(m, K.priv));
    const tampered = text.replace(`"size":${m.size}`, `"size":${m.size - 1}`);
    expect(() => loadManifest(new TextEncoder().encode(tampered), K.pub)).toThrow(/bad signature/);
    const flipped = text.replace(m.chunks[1], m.chunks[1].replace(/^./, (c) => (c === "a" ? "b" : "a")));
    expect(() => loadManifest(new TextEncoder().encode(flipped), K.pub)).toThrow(/bad signature/);
    const other = keys();
    expect(() => loadManifest(new TextEncoder().encode(text), other.pub)).toThrow(/not by the trusted image key/);
    expect(() => loadManifest(signManifest(m, other.priv), K.pub)).toThrow(ManifestError);
    const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey.export({ type: "spki", format: "pem" }) as string;
    expect(() => loadManifest(new TextEncoder().encode(text), rsa)).toThrow(/expected ed25519/);
    expect(() => loadManifest(new TextEncoder().encode(text), "not a key")).toThrow(/public key unreadable/);
  });

  test("structurally bad manifests are refused even when validly signed", () => {
    const { m } = sample();
    // validateManifest is what a correctly signed but wrong manifest meets after the signature check
    expect(() => validateManifest({ ...m, chunks: m.chunks.slice(1) })).toThrow(/chunk hashes/);
    expect(() => validateManifest({ ...m, format: 2 })).toThrow(/format 2 is not supported/);
    expect(() => validateManifest({ ...m, chunkSize: 5000 })).toThrow(/power of two/);
    expect(() => validateManifest({ ...m, extra: 1 })).toThrow(/unknown field/);
    expect(() => validateManifest({ ...m, digest: m.digest.toUpperCase() })).toThrow(/digest/);
    expect(() => validateManifest({ ...m, size: -1 })).toThrow(/size/);
    expect(() => validateManifest({ ...m, profile: "../x" })).toThrow(/profile/);
    expect(() => validateManifest([m])).toThrow(/not a JSON object/);
    expect(() => signManifest({ ...m, size: 1 }, K.priv)).toThrow(ManifestError); // never signs an invalid manifest
  });

  test("fuzz: random bytes, truncations and byte flips never crash and never pass", () => {
    const { m } = sample(50_000, 4096);
    const good = signManifest(m, K.priv);
    let seed = 12345;
    const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const attempts: Uint8Array[] = [];
    for (let i = 0; i < 300; i++) attempts.push(good.subarray(0, Math.floor(rnd() * good.length))); // truncations
    for (let i = 0; i < 500; i++) { // single and multiple byte flips
      const b = good.slice();
      const n = 1 + Math.floor(rnd() * 3);
      for (let k = 0; k < n; k++) b[Math.floor(rnd() * b.length)] ^= 1 + Math.floor(rnd() * 255);
      attempts.push(b);
    }
    for (let i = 0; i < 300; i++) { // random garbage, sometimes with the right first line
      const len = Math.floor(rnd() * 400);
      const b = new Uint8Array(len).map(() => Math.floor(rnd() * 256));
      attempts.push(i % 2 ? b : new Uint8Array([...new TextEncoder().encode("airroot-manifest v1\n"), ...b]));
    }
    attempts.push(new Uint8Array(0), new TextEncoder().encode("\n\n\n"), new Uint8Array([...good, 10]));
    for (const a of attempts) {
      let result: unknown = "threw";
      try { result = loadManifest(a, K.pub); } catch (e) { expect(e).toBeInstanceOf(ManifestError); }
      if (result !== "threw") expect(Buffer.from(a).equals(Buffer.from(good))).toBe(true); // only the intact file loads
    }
  });

  test("fuzz: validateManifest on random JSON-ish objects throws only ManifestError", () => {
    const { m } = sample();
    let seed = 99;
    const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const values = [null, 0, -1, 1.5, 2 ** 60, "", "x", [], {}, true, m.digest, [m.digest], NaN, "2026-01-01"];
    for (let i = 0; i < 2000; i++) {
      const o: Record<string, unknown> = { ...m };
      const key = Object.keys(m)[Math.floor(rnd() * 7)];
      o[key] = values[Math.floor(rnd() * values.length)];
      if (rnd() < 0.2) delete o[Object.keys(m)[Math.floor(rnd() * 7)]];
      try { validateManifest(o); } catch (e) { expect(e).toBeInstanceOf(ManifestError); }
    }
  });
});

describe("chunk verifier", () => {
  test("accepts exactly the right bytes per chunk", () => {
    const { m, data } = sample(10_000, 4096);
    const v = manifestVerifier(m);
    expect(v.chunkSize).toBe(4096);
    expect(v.verify(0, data.subarray(0, 4096))).toBe(true);
    expect(v.verify(2, data.subarray(8192))).toBe(true); // short last chunk
    const bad = data.slice(0, 4096); bad[100] ^= 1;
    expect(v.verify(0, bad)).toBe(false);
    expect(v.verify(1, data.subarray(0, 4096))).toBe(false);          // right bytes, wrong place
    expect(v.verify(2, data.subarray(8192, 9000))).toBe(false);       // truncated
    expect(v.verify(2, new Uint8Array([...data.subarray(8192), 0]))).toBe(false); // padded
    for (const i of [-1, 3, 1.5, NaN, 2 ** 53]) expect(v.verify(i, data.subarray(0, 4096))).toBe(false);
  });

  test("bench helper reports SHA-256 verification throughput", () => {
    const r = benchVerify({ totalBytes: 32 * 1024 * 1024 });
    expect(r.bytes).toBe(32 * 1024 * 1024);
    expect(r.mbPerSecond).toBeGreaterThan(50);
    console.log(`chunk verification: ${r.mbPerSecond.toFixed(0)} MB/s (SHA-256, ${r.chunkSize / 1024} KiB chunks)`);
  });
});
