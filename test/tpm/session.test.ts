// Salted policy sessions: the unsealed key crosses the wire encrypted, and altered replies are detected.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { startSwtpm } from "../helpers/swtpm";
import { Tpm } from "../../src/tpm/commands";
import { TPM_ALG, TPM_CC } from "../../src/tpm/constants";
import { findCredential, sealCredential, unsealCredential } from "../../src/tpm/credential";
import { hex } from "../../src/tpm/marshal";
import { TpmIntegrityError, pcrPolicyAuth, withPolicySession } from "../../src/tpm/session";
import { type TpmTransport, openTransport } from "../../src/tpm/transport";

afterAll(removeScratchDirs);

/** Wraps the real swtpm transport to watch, and optionally alter, Unseal replies (an interposer on the TPM bus). */
class Tap implements TpmTransport {
  readonly description = "tap";
  unsealReplies: Uint8Array[] = [];
  createCommands: Uint8Array[] = [];
  tamper?: (r: Uint8Array) => Uint8Array;
  constructor(private inner: TpmTransport) {}
  async send(cmd: Uint8Array): Promise<Uint8Array> {
    const rsp = await this.inner.send(cmd);
    const cc = new DataView(cmd.buffer, cmd.byteOffset).getUint32(6);
    if (cc === TPM_CC.Create) this.createCommands.push(cmd);
    if (cc !== TPM_CC.Unseal) return rsp;
    this.unsealReplies.push(rsp);
    return this.tamper ? this.tamper(rsp) : rsp;
  }
  close() { return this.inner.close(); }
}

test("seal and unseal over salted sessions: key encrypted on the wire, reply HMAC checked, tampering detected", async () => {
  const dir = scratchDir();
  const sw = await startSwtpm(join(dir, "tpm"));
  const tap = new Tap(await openTransport(sw.spec, { timeoutMs: 20_000 }));
  const tpm = new Tpm(tap);
  try {
    const cred = new Uint8Array(200).fill(0x5a);
    await sealCredential(tpm, cred, { bank: TPM_ALG.SHA256 });
    expect(hex(await unsealCredential(tpm))).toBe(hex(cred));
    const onWire = tap.unsealReplies[0];

    // Unseal the same object with a plain (unsalted) policy session to learn K, for comparison only.
    const info = (await findCredential(tpm))!;
    const k = await withPolicySession(tpm, async (s) => tpm.unseal(info.objectHandle, await pcrPolicyAuth(tpm, s, [{ hash: TPM_ALG.SHA256, pcrs: [15] }])));
    expect(k.length).toBe(32);
    expect(Buffer.from(onWire).includes(Buffer.from(k))).toBe(false);
    expect(tap.createCommands.length).toBe(1);
    expect(Buffer.from(tap.createCommands[0]).includes(Buffer.from(k))).toBe(false); // sealing sent it encrypted too
    expect(Buffer.from(tap.unsealReplies[1]).includes(Buffer.from(k))).toBe(true); // the unsalted one did leak it

    // An interposer flipping one bit of the encrypted key or of the HMAC is caught before any decryption result is used.
    for (const at of [16, onWire.length - 5]) {
      tap.tamper = (r) => { const c = new Uint8Array(r); c[at] ^= 0x01; return c; };
      const e = await unsealCredential(tpm).catch((x) => x);
      expect(e).toBeInstanceOf(TpmIntegrityError);
      expect(String(e)).toMatch(/response HMAC mismatch/);
    }
    tap.tamper = undefined;
    expect(hex(await unsealCredential(tpm))).toBe(hex(cred));
    // Sessions and primaries were flushed on every path: no transient handles or sessions left behind.
    expect(await tpm.getHandles(0x80000000)).toEqual([]);
    expect(await tpm.getHandles(0x03000000)).toEqual([]);
    expect(await tpm.getHandles(0x02000000)).toEqual([]);
  } finally { await tpm.close(); await sw.stop(); }
}, 60_000);

test("salted sessions work with an RSA storage key too (salt encrypted with RSA-OAEP)", async () => {
  const dir = scratchDir();
  const sw = await startSwtpm(join(dir, "tpm"));
  const tpm = new Tpm(await openTransport(sw.spec, { timeoutMs: 30_000 }));
  try {
    const cred = new Uint8Array(500).fill(0x33);
    await sealCredential(tpm, cred, { srkAlg: "rsa" });
    expect(hex(await unsealCredential(tpm, { srkAlg: "rsa" }))).toBe(hex(cred));
    expect(hex(await unsealCredential(tpm))).toBe(hex(cred)); // the SRK only protects transport, not the object
  } finally { await tpm.close(); await sw.stop(); }
}, 60_000);
