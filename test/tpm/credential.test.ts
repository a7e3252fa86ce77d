// Sealed-credential lifecycle against a real swtpm, cross-checked with tpm2-tools (tpm2_unseal, tpm2_createpolicy).
import { afterAll, afterEach, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { type Swtpm, startSwtpm } from "../helpers/swtpm";
import { type Tpm, openTpm } from "../../src/tpm/tpm";
import {
  CredentialError, evictCredential, findCredential, listCredentials, lockCredential, lockedPcrValue, sealCredential, unsealCredential,
} from "../../src/tpm/credential";
import { TPM_ALG } from "../../src/tpm/constants";
import { trialPcrPolicy } from "../../src/tpm/session";
import { policyPcrDigest } from "../../src/tpm/structures";
import { hex } from "../../src/tpm/marshal";

/** One simulated node TPM: swtpm plus our open connection. swtpm serves one TCP client at a time, so
 *  `tools()` closes our connection while a tpm2-tools command runs and reopens it afterwards. */
interface Rig {
  sw: Swtpm;
  tpm: Tpm;
  tools(args: string[], allowFail?: boolean): Promise<{ code: number; stdout: string; stderr: string }>;
}
const running: Rig[] = [];
afterEach(async () => {
  for (const r of running.splice(0)) { await r.tpm.close(); await r.sw.stop(); }
}, 60_000);
afterAll(removeScratchDirs);

async function boot(stateDir: string, cwd = stateDir): Promise<Rig> {
  const sw = await startSwtpm(stateDir);
  const rig: Rig = {
    sw, tpm: undefined as unknown as Tpm,
    async tools(args, allowFail = false) {
      await rig.tpm.close();
      try { return sw.tools(args, { cwd, allowFail }); } finally { rig.tpm = await openTpm(sw.spec, { timeoutMs: 20_000 }); }
    },
  };
  running.push(rig);
  rig.tpm = await openTpm(sw.spec, { timeoutMs: 20_000 });
  return rig;
}

/** Stops the TPM (power off) and starts it again on the same state: a node reboot. */
async function reboot(r: Rig): Promise<Rig> {
  running.splice(running.indexOf(r), 1);
  await r.tpm.close(); await r.sw.stop();
  return await boot(r.sw.stateDir);
}

const payload = (n: number) => new Uint8Array(n).map((_, i) => (i * 7 + 3) & 0xff);

async function expectCredentialError(p: Promise<unknown>, kind: string, text: RegExp): Promise<void> {
  const e = await p.then(() => undefined, (x) => x);
  expect(e).toBeInstanceOf(CredentialError);
  expect((e as CredentialError).kind as string).toBe(kind);
  expect((e as Error).message).toMatch(text);
}

test("seal, find, unseal a few KiB; lock makes unseal fail with a clear error; reboot unseals again", async () => {
  const dir = scratchDir();
  let r = await boot(join(dir, "tpm"));
  const cred = payload(4000);
  const info = await sealCredential(r.tpm, cred);
  expect(info.pcr).toBe(15);
  expect(info.bank).toBe(TPM_ALG.SHA512); // strongest bank swtpm allocates
  expect(info.nvIndices.length).toBeGreaterThan(1); // 4000 bytes > swtpm's 2048-byte NV index limit
  expect(await findCredential(r.tpm)).toEqual(info);
  expect(Buffer.from(await unsealCredential(r.tpm)).equals(Buffer.from(cred))).toBe(true);

  const banks = await lockCredential(r.tpm);
  expect(banks).toContain(TPM_ALG.SHA256);
  await expectCredentialError(unsealCredential(r.tpm), "locked", /locked for this boot.*PCR 15/);
  // Sealing again after the lock would bind to the locked value: refused.
  await expectCredentialError(sealCredential(r.tpm, cred), "locked", /already locked/);

  r = await reboot(r);
  expect(Buffer.from(await unsealCredential(r.tpm)).equals(Buffer.from(cred))).toBe(true);
}, 60_000);

test("a credential sealed by airroot is unsealed by tpm2_unseal with a PolicyPCR session; lock stops it too", async () => {
  const dir = scratchDir();
  const rig = await boot(join(dir, "tpm"), dir);
  // Small payload, sha256 bank: the sealed object holds the 32-byte key; check tpm2-tools gets the same key
  // by decrypting the NV blob is overkill — instead check that tpm2_unseal releases 32 bytes and our unseal works.
  const info = await sealCredential(rig.tpm, payload(100), { bank: TPM_ALG.SHA256 });
  const handle = `0x${info.objectHandle.toString(16)}`;
  const run = (args: string[], allowFail = false) => rig.tools(args, allowFail);
  const unsealWithTools = async (allowFail: boolean) => {
    await run(["tpm2_startauthsession", "--policy-session", "-S", "s.ctx"]);
    await run(["tpm2_policypcr", "-S", "s.ctx", "-l", "sha256:15"]);
    const res = await run(["tpm2_unseal", "-p", "session:s.ctx", "-c", handle, "-o", "key.bin"], allowFail);
    await run(["tpm2_flushcontext", "-s"], true);
    return res;
  };
  const res = await unsealWithTools(false);
  expect(res.code).toBe(0);
  expect(readFileSync(join(dir, "key.bin")).length).toBe(32);

  // Our software policy digest = the TPM's trial session = tpm2_createpolicy.
  const sel = [{ hash: TPM_ALG.SHA256, pcrs: [15] }];
  const soft = policyPcrDigest(TPM_ALG.SHA256, sel, (await rig.tpm.pcrRead(sel)).values);
  expect(hex(await trialPcrPolicy(rig.tpm, sel))).toBe(hex(soft));
  await run(["tpm2_createpolicy", "--policy-pcr", "-l", "sha256:15", "-L", "policy.bin"]);
  expect(hex(readFileSync(join(dir, "policy.bin")))).toBe(hex(soft));
  expect(hex((await rig.tpm.readPublic(info.objectHandle)).public.authPolicy)).toBe(hex(soft));

  await lockCredential(rig.tpm);
  const after = await unsealWithTools(true);
  expect(after.code).not.toBe(0);
  expect(after.stderr).toMatch(/policy|0x99d|0x9d/i);
}, 60_000);

test("TPM reset (fresh swtpm state): no credential, a clean 'absent' error, then enroll again works", async () => {
  const dir = scratchDir();
  const a = await boot(join(dir, "tpm-a"));
  await sealCredential(a.tpm, payload(300));
  const b = await boot(join(dir, "tpm-b")); // the node's TPM was cleared / replaced
  expect(await findCredential(b.tpm)).toBeUndefined();
  await expectCredentialError(unsealCredential(b.tpm), "absent", /no sealed airroot credential.*enroll/);
  expect(await evictCredential(b.tpm)).toBe(0);
  await sealCredential(b.tpm, payload(300));
  expect((await unsealCredential(b.tpm)).length).toBe(300);
}, 60_000);

test("re-sealing replaces the old credential; evict removes object and NV indices; other NV data is left alone", async () => {
  const dir = scratchDir();
  const rig = await boot(join(dir, "tpm"), dir);
  // A foreign NV index and persistent object that must survive our scans and evictions.
  await rig.tools(["tpm2_nvdefine", "0x01300000", "-C", "o", "-s", "64", "-a", "ownerread|ownerwrite|authread|authwrite"]);
  await rig.tools(["tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", "ecc", "-c", "p.ctx"]);
  await rig.tools(["tpm2_evictcontrol", "-C", "o", "-c", "p.ctx", "0x81000100"]);
  await rig.tools(["tpm2_flushcontext", "-t"]);
  const tpm = rig.tpm;

  const first = await sealCredential(tpm, payload(50));
  expect(first.objectHandle).toBe(0x81000101); // 0x81000100 is taken
  expect(first.nvIndices).toEqual([0x01300001]);
  const second = await sealCredential(tpm, payload(2500));
  expect(await listCredentials(tpm)).toEqual([second]);
  expect((await unsealCredential(tpm)).length).toBe(2500);

  expect(await evictCredential(tpm)).toBe(1);
  expect(await tpm.getHandles(0x81000000)).toEqual([0x81000100]);
  expect(await tpm.getHandles(0x01000000)).toEqual([0x01300000]);
}, 60_000);

test("lock extends every allocated bank with the fixed airroot event (value predictable from zero)", async () => {
  const { tpm } = await boot(join(scratchDir(), "tpm"));
  await lockCredential(tpm, { pcr: 15 });
  for (const hash of [TPM_ALG.SHA1, TPM_ALG.SHA256, TPM_ALG.SHA384, TPM_ALG.SHA512]) {
    const { values } = await tpm.pcrRead([{ hash, pcrs: [15] }]);
    expect(hex(values[0])).toBe(hex(lockedPcrValue(hash)));
  }
}, 60_000);

test("bindPcrs: the credential is also bound to other PCRs; changing one gives a 'changed' error", async () => {
  const { tpm } = await boot(join(scratchDir(), "tpm"));
  const info = await sealCredential(tpm, payload(64), { bindPcrs: [16, 14], bank: TPM_ALG.SHA256 });
  expect(info.boundPcrs).toEqual([14, 16]);
  expect((await findCredential(tpm))!.boundPcrs).toEqual([14, 16]);
  const sel = [{ hash: TPM_ALG.SHA256, pcrs: [14, 15, 16] }];
  expect(hex((await tpm.readPublic(info.objectHandle)).public.authPolicy)).toBe(hex(await trialPcrPolicy(tpm, sel)));
  expect((await unsealCredential(tpm)).length).toBe(64);
  await tpm.pcrExtend(16, [{ hash: TPM_ALG.SHA256, digest: new Uint8Array(32).fill(9) }]);
  await expectCredentialError(unsealCredential(tpm), "changed", /PCR 15 or bound PCRs 14,16 \(sha256\) do not hold the values/);
  await expectCredentialError(sealCredential(tpm, payload(8), { bindPcrs: [15] }), "unsupported", /not including PCR 15/);
}, 60_000);

test("damaged state gives 'corrupt' errors, and evict still cleans up", async () => {
  const dir = scratchDir();
  const rig = await boot(join(dir, "tpm"), dir);
  let info = await sealCredential(rig.tpm, payload(100));
  // Someone evicted our sealed object behind our back.
  await rig.tools(["tpm2_evictcontrol", "-C", "o", "-c", `0x${info.objectHandle.toString(16)}`]);
  await expectCredentialError(unsealCredential(rig.tpm), "corrupt", /names object 0x81000100, which is not in the TPM/);
  expect(await evictCredential(rig.tpm)).toBe(1);
  expect(await rig.tpm.getHandles(0x01000000)).toEqual([]);

  // Someone altered the ciphertext in NV.
  info = await sealCredential(rig.tpm, payload(100));
  writeFileSync(join(dir, "byte.bin"), new Uint8Array([0x42]));
  await rig.tools(["tpm2_nvwrite", `0x${info.nvIndices[0].toString(16)}`, "-C", "o", "-i", "byte.bin", "--offset", "80"]);
  await expectCredentialError(unsealCredential(rig.tpm), "corrupt", /failed its integrity check/);
}, 60_000);

test("bad options give clear errors", async () => {
  const { tpm } = await boot(join(scratchDir(), "tpm"));
  await expectCredentialError(sealCredential(tpm, payload(10), { pcr: 30 }), "unsupported", /PCR 30/);
  await expectCredentialError(sealCredential(tpm, new Uint8Array(0)), "unsupported", /size 0/);
  await expectCredentialError(sealCredential(tpm, payload(10), { bank: 0x0012 }), "unsupported", /not allocated/);
}, 60_000);
