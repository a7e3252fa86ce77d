// MakeCredential/ActivateCredential cross-checked with tpm2-tools both ways, for ECC and RSA endorsement keys.
import { afterAll, afterEach, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { type Swtpm, startSwtpm } from "../helpers/swtpm";
import { type Tpm, openTpm } from "../../src/tpm/tpm";
import { activateCredential, identityToWire, readEkCertificate, readIdentity } from "../../src/tpm/attest";
import { challengeFromWire, fromToolsCredentialFile, makeCredential, makeEnrollmentChallenge, toToolsCredentialFile } from "../../src/tpm/makecredential";
import { objectName, publicFromBytes } from "../../src/tpm/structures";
import { TpmFormatError, Writer, hex } from "../../src/tpm/marshal";
import { TpmError } from "../../src/tpm/rc";

const started: Swtpm[] = [];
afterEach(async () => { for (const s of started.splice(0)) await s.stop(); });
afterAll(removeScratchDirs);

/** swtpm takes one TCP client at a time: each step opens our connection, runs, closes. */
async function withOurs<T>(sw: Swtpm, fn: (tpm: Tpm) => Promise<T>): Promise<T> {
  const tpm = await openTpm(sw.spec, { timeoutMs: 30_000 });
  try { return await fn(tpm); } finally { await tpm.close(); }
}

for (const alg of ["ecc", "rsa"] as const) {
  test(`${alg} EK: our MakeCredential blob is activated by tpm2_activatecredential`, async () => {
    const dir = scratchDir();
    const sw = await startSwtpm(join(dir, "tpm"));
    started.push(sw);
    const t = (args: string[]) => sw.tools(args, { cwd: dir });
    t(["tpm2_createek", "-c", "ek.ctx", "-G", alg, "-u", "ek.pub"]);
    t(["tpm2_flushcontext", "-t"]);
    t(["tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s", "ecdsa", "-u", "ak.pub", "-n", "ak.name"]);
    t(["tpm2_flushcontext", "-t"]);
    t(["tpm2_flushcontext", "-s"]);

    const ekPub = publicFromBytes(readFileSync(join(dir, "ek.pub")));
    const akName = new Uint8Array(readFileSync(join(dir, "ak.name")));
    expect(hex(objectName(publicFromBytes(readFileSync(join(dir, "ak.pub")))))).toBe(hex(akName));
    // Our EK template yields the very same EK as tpm2_createek.
    const ours = await withOurs(sw, (tpm) => readIdentity(tpm, { ekAlg: alg }));
    expect(hex(ours.ekPublic.raw)).toBe(hex(ekPub.raw));

    const secret = new Uint8Array(32).map((_, i) => i + 1);
    writeFileSync(join(dir, "cred.blob"), toToolsCredentialFile(makeCredential(ekPub, akName, secret)));
    t(["tpm2_startauthsession", "--policy-session", "-S", "s.ctx"]);
    t(["tpm2_policysecret", "-S", "s.ctx", "-c", "e"]);
    t(["tpm2_activatecredential", "-c", "ak.ctx", "-C", "ek.ctx", "-i", "cred.blob", "-o", "out.bin", "-P", "session:s.ctx"]);
    expect(hex(readFileSync(join(dir, "out.bin")))).toBe(hex(secret));
  }, 120_000);

  test(`${alg} EK: a tpm2_makecredential blob is activated by our ActivateCredential`, async () => {
    const dir = scratchDir();
    const sw = await startSwtpm(join(dir, "tpm"));
    started.push(sw);
    const id = await withOurs(sw, (tpm) => readIdentity(tpm, { ekAlg: alg }));
    expect(id.ekCertificate).toBeUndefined(); // plain swtpm state has no EK certificate
    writeFileSync(join(dir, "ek.pub"), new Writer().tpm2b(id.ekPublic.raw).finish());
    const secret = new Uint8Array(20).map((_, i) => 0xa0 + i);
    writeFileSync(join(dir, "secret.bin"), secret);
    sw.tools(["tpm2_makecredential", "-T", "none", "-u", "ek.pub", "-s", "secret.bin", "-n", hex(id.akName), "-o", "cred.blob"], { cwd: dir });
    const blob = fromToolsCredentialFile(readFileSync(join(dir, "cred.blob")));
    const got = await withOurs(sw, (tpm) => activateCredential(tpm, blob.credentialBlob, blob.secret, { ekAlg: alg }));
    expect(hex(got)).toBe(hex(secret));

    // A blob bound to another object's name is refused by the TPM with a decoded error, not garbage.
    const wrongName = new Uint8Array(id.akName); wrongName[5] ^= 1;
    const bad = makeCredential(id.ekPublic, wrongName, secret);
    const err = await withOurs(sw, (tpm) => activateCredential(tpm, bad.credentialBlob, bad.secret, { ekAlg: alg })).catch((e) => e);
    expect(err).toBeInstanceOf(TpmError);
    expect(String(err)).toMatch(/ActivateCredential failed: TPM_RC_INTEGRITY/);
  }, 120_000);
}

test("EK certificate is read from its TCG NV index when present", async () => {
  const dir = scratchDir();
  const sw = await startSwtpm(join(dir, "tpm"));
  started.push(sw);
  const der = new Uint8Array(1500).map((_, i) => (i * 13) & 0xff); // content is opaque to us
  writeFileSync(join(dir, "cert.der"), der);
  sw.tools(["tpm2_nvdefine", "0x01c0000a", "-C", "o", "-s", String(der.length), "-a", "ownerread|ownerwrite|authread|no_da"], { cwd: dir });
  sw.tools(["tpm2_nvwrite", "0x01c0000a", "-C", "o", "-i", "cert.der"], { cwd: dir });
  const got = await withOurs(sw, (tpm) => readEkCertificate(tpm, "ecc"));
  expect(hex(got!)).toBe(hex(der));
  expect(await withOurs(sw, (tpm) => readEkCertificate(tpm, "rsa"))).toBeUndefined();
}, 60_000);

test("enrollment round trip: node identity → server challenge (AK name computed by the server) → node activation", async () => {
  const dir = scratchDir();
  const a = await startSwtpm(join(dir, "tpm-a"));
  const b = await startSwtpm(join(dir, "tpm-b"));
  started.push(a, b);
  const wireA = identityToWire(await withOurs(a, (tpm) => readIdentity(tpm)));
  const wireB = identityToWire(await withOurs(b, (tpm) => readIdentity(tpm)));
  expect(wireA.ekPublic).not.toBe(wireB.ekPublic);
  // Deterministic: the same TPM yields the same EK public on every boot (the server compares it as a string).
  expect(identityToWire(await withOurs(a, (tpm) => readIdentity(tpm))).ekPublic).toBe(wireA.ekPublic);

  const secret = new Uint8Array(32).map((_, i) => 255 - i);
  const ch = makeEnrollmentChallenge(wireA.ekPublic, wireA.akPublic, secret);
  const got = await withOurs(a, (tpm) => { const m = challengeFromWire(ch); return activateCredential(tpm, m.credentialBlob, m.secret); });
  expect(hex(got)).toBe(hex(secret));

  // EK of TPM A but AK of TPM B (a node lying about which keys share a TPM): TPM A refuses.
  const mixed = challengeFromWire(makeEnrollmentChallenge(wireA.ekPublic, wireB.akPublic, secret));
  const err = await withOurs(a, (tpm) => activateCredential(tpm, mixed.credentialBlob, mixed.secret)).catch((e) => e);
  expect(err).toBeInstanceOf(TpmError);
  // Swapped roles or junk are refused by the server before any crypto.
  expect(() => makeEnrollmentChallenge(wireA.akPublic, wireA.ekPublic, secret)).toThrow(TpmFormatError);
  expect(() => makeEnrollmentChallenge("not base64!", wireA.akPublic, secret)).toThrow(TpmFormatError);
}, 60_000);
