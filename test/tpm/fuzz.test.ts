// Property/fuzz tests: truncated, corrupted and random TPM replies and files give only our error types, never hang.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { startSwtpm } from "../helpers/swtpm";
import { Tpm, parseResponse } from "../../src/tpm/commands";
import { TPM_ALG, TPM_CC } from "../../src/tpm/constants";
import { CredentialError, evictCredential, lockCredential, sealCredential, unsealCredential } from "../../src/tpm/credential";
import { activateCredential, readIdentity } from "../../src/tpm/attest";
import { fromToolsCredentialFile, makeCredential, toToolsCredentialFile } from "../../src/tpm/makecredential";
import { Reader, TpmFormatError, Writer } from "../../src/tpm/marshal";
import { TpmError, decodeRc, describeRc } from "../../src/tpm/rc";
import { trialPcrPolicy } from "../../src/tpm/session";
import { publicFromBytes, readNvPublic2b, readPcrSelections } from "../../src/tpm/structures";
import { type TpmTransport, TpmTransportError, openTransport } from "../../src/tpm/transport";
import { tpmInfo } from "../../src/tpm/tpm";

afterAll(removeScratchDirs);

/** Deterministic PRNG so a failure can be replayed from its seed. */
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  const next = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s; };
  return { int: (n: number) => next() % Math.max(1, n), bytes: (n: number) => new Uint8Array(n).map(() => next() & 0xff) };
}

const isOurs = (e: unknown) =>
  e instanceof TpmFormatError || e instanceof TpmError || e instanceof TpmTransportError || e instanceof CredentialError;

/** Every command airroot sends, in one run: info, policy, seal/unseal/lock/evict, EK/AK, activation. */
async function scenario(tpm: Tpm): Promise<void> {
  await tpm.startup();
  await tpmInfo(tpm);
  await tpm.getRandom(40);
  await trialPcrPolicy(tpm, [{ hash: TPM_ALG.SHA256, pcrs: [15] }]);
  const info = await sealCredential(tpm, new Uint8Array(2600).fill(7), { saltedSession: false });
  // Replayed replies cannot carry valid HMACs for a fresh salted session: the salted path is fuzzed live below.
  await unsealCredential(tpm, { saltedSession: false });
  await tpm.readPublic(info.objectHandle);
  await lockCredential(tpm);
  await unsealCredential(tpm, { saltedSession: false }).catch((e) => { if (!(e instanceof CredentialError)) throw e; });
  await evictCredential(tpm);
  const id = await readIdentity(tpm);
  const made = makeCredential(id.ekPublic, id.akName, new Uint8Array(16).fill(1));
  await activateCredential(tpm, made.credentialBlob, made.secret);
}

/** Records real swtpm replies so they can be replayed, mutated, without a TPM. */
class Recorder implements TpmTransport {
  readonly description = "recorder";
  readonly replies: Uint8Array[] = [];
  constructor(private inner: TpmTransport) {}
  async send(c: Uint8Array) { const r = await this.inner.send(c); this.replies.push(r); return r; }
  close() { return this.inner.close(); }
}

/** Replays recorded replies in order, one of them mutated. A mock: no real TPM produces such replies on demand. */
class Replay implements TpmTransport {
  readonly description = "replay";
  private i = 0;
  constructor(private replies: Uint8Array[], private target: number, private mutate: (r: Uint8Array) => Uint8Array) {}
  async send(): Promise<Uint8Array> {
    const i = this.i++;
    if (i >= this.replies.length) throw new TpmTransportError("replay: no more recorded replies");
    return i === this.target ? this.mutate(this.replies[i]) : this.replies[i];
  }
  async close() {}
}

/** Sets the header size field to the real length, so the mutation reaches the parameter parsers. */
const fixSize = (b: Uint8Array) => { const c = new Uint8Array(b); if (c.length >= 6) new DataView(c.buffer).setUint32(2, c.length); return c; };

test("every response parser, fed truncated / corrupted / random replies, throws only TPM error types and never hangs", async () => {
  const dir = scratchDir();
  const sw = await startSwtpm(join(dir, "tpm"));
  const rec = new Recorder(await openTransport(sw.spec, { timeoutMs: 20_000 }));
  try { await scenario(new Tpm(rec)); } finally { await rec.close(); await sw.stop(); }
  const replies = rec.replies;
  expect(replies.length).toBeGreaterThan(50);

  // Sanity: the unmutated replay runs the whole scenario.
  await scenario(new Tpm(new Replay(replies, -1, (r) => r)));

  const r = rng(0xa1f00d);
  const mutations: [string, (b: Uint8Array) => Uint8Array][] = [
    ["truncate", (b) => fixSize(b.slice(0, 10 + r.int(b.length - 10)))],
    ["truncate-raw", (b) => b.slice(0, r.int(b.length))],
    ["flip", (b) => { const c = new Uint8Array(b); for (let k = 0; k < 1 + r.int(4); k++) { const at = 10 + r.int(c.length - 10); if (at < c.length) c[at] ^= 1 << r.int(8); } return c; }],
    ["garbage-body", (b) => fixSize(new Uint8Array([...b.slice(0, 10), ...r.bytes(r.int(300))]))],
    ["extend", (b) => fixSize(new Uint8Array([...b, ...r.bytes(1 + r.int(20))]))],
    ["random", () => r.bytes(r.int(64))],
    ["bad-rc", (b) => { const c = new Uint8Array(b.slice(0, 10)); new DataView(c.buffer).setUint32(6, r.int(0x1000)); return fixSize(c); }],
  ];
  let runs = 0, failures = 0;
  const t0 = Date.now();
  for (let step = 0; step < replies.length; step++) {
    for (const [kind, m] of mutations) {
      const iterations = kind === "flip" || kind === "truncate" ? 3 : 1;
      for (let it = 0; it < iterations; it++) {
        runs++;
        const run = scenario(new Tpm(new Replay(replies, step, m)));
        const outcome = await Promise.race([run.then(() => "ok", (e) => e), Bun.sleep(5000).then(() => "hang")]);
        if (outcome === "hang") throw new Error(`scenario hung with ${kind} mutation of reply ${step}`);
        if (outcome !== "ok" && !isOurs(outcome)) {
          failures++;
          throw new Error(`reply ${step}, ${kind}: escaped ${(outcome as Error)?.constructor?.name}: ${(outcome as Error)?.stack}`);
        }
      }
    }
  }
  expect(failures).toBe(0);
  expect(runs).toBeGreaterThan(500);
  expect(Date.now() - t0).toBeLessThan(110_000);
}, 120_000);

test("salted Unseal, live: mutated replies from a real swtpm give only TPM error types (mostly integrity errors)", async () => {
  const dir = scratchDir();
  const sw = await startSwtpm(join(dir, "tpm"));
  const r = rng(0x5a17);
  let mutate: ((b: Uint8Array) => Uint8Array) | undefined;
  const inner = await openTransport(sw.spec, { timeoutMs: 20_000 });
  // A mock in front of the real TPM: only the Unseal reply is altered (no real TPM can be made to do that).
  const tap: TpmTransport = {
    description: "tap",
    async send(cmd) {
      const rsp = await inner.send(cmd);
      const cc = new DataView(cmd.buffer, cmd.byteOffset).getUint32(6);
      return cc === TPM_CC.Unseal && mutate ? mutate(rsp) : rsp;
    },
    close: () => inner.close(),
  };
  const tpm = new Tpm(tap);
  const kinds: Record<string, number> = {};
  try {
    await sealCredential(tpm, new Uint8Array(100).fill(3));
    for (let i = 0; i < 150; i++) {
      mutate = i % 3 === 0
        ? (b) => fixSize(b.slice(0, 10 + r.int(b.length - 10)))
        : (b) => { const c = new Uint8Array(b); c[10 + r.int(c.length - 10)] ^= 1 << r.int(8); return c; };
      const e = await unsealCredential(tpm).then(() => undefined, (x) => x);
      expect(e === undefined || isOurs(e)).toBe(true);
      kinds[e?.constructor?.name ?? "ok"] = (kinds[e?.constructor?.name ?? "ok"] ?? 0) + 1;
    }
    mutate = undefined;
    expect((await unsealCredential(tpm)).length).toBe(100);
    expect(kinds.TpmIntegrityError).toBeGreaterThan(50);
  } finally { await tpm.close(); await sw.stop(); }
}, 60_000);

test("parseResponse: random bytes give only TpmFormatError/TpmError", () => {
  const r = rng(7);
  for (let i = 0; i < 5000; i++) {
    const b = r.bytes(r.int(80));
    if (i % 3 === 0 && b.length >= 10) { new DataView(b.buffer).setUint32(2, b.length); b[0] = 0x80; b[1] = 1 + r.int(2); }
    try {
      parseResponse(b, { cc: TPM_CC.GetRandom, auths: i % 2 ? [{ handle: 0x40000009 }] : [], responseHandles: r.int(3) });
    } catch (e) {
      expect(e instanceof TpmFormatError || e instanceof TpmError).toBe(true);
    }
  }
});

test("decodeRc never throws and always names something", () => {
  const r = rng(9);
  for (let i = 0; i < 20000; i++) {
    const rc = i < 0x1000 ? i : (r.int(0xffffffff) >>> 0);
    const d = decodeRc(rc);
    expect(d.name.length).toBeGreaterThan(0);
    expect(typeof describeRc(rc)).toBe("string");
  }
  expect(describeRc(0x99d)).toBe("TPM_RC_POLICY_FAIL (session 1): a policy check failed [0x99d]");
  expect(describeRc(0x1c4)).toMatch(/TPM_RC_VALUE \(parameter 1\)/);
  expect(describeRc(0x18b)).toMatch(/TPM_RC_HANDLE \(handle 1\)/);
  expect(describeRc(0x922)).toMatch(/TPM_RC_RETRY/);
  expect(describeRc(0x101)).toMatch(/TPM_RC_FAILURE/);
});

test("public areas, NV publics, PCR selections and credential files: mutations give only TpmFormatError", async () => {
  const dir = scratchDir();
  const sw = await startSwtpm(join(dir, "tpm"));
  let id: Awaited<ReturnType<typeof readIdentity>>[];
  const t = await openTransport(sw.spec);
  try { const tpm = new Tpm(t); id = [await readIdentity(tpm, { ekAlg: "ecc" }), await readIdentity(tpm, { ekAlg: "rsa" })]; }
  finally { await t.close(); await sw.stop(); }

  const r = rng(11);
  const samples: Uint8Array[] = [];
  for (const x of id) {
    samples.push(new Writer().tpm2b(x.ekPublic.raw).finish(), new Writer().tpm2b(x.akPublic.raw).finish());
  }
  const cred = toToolsCredentialFile(makeCredential(id[0].ekPublic, id[0].akName, new Uint8Array(8)));
  const nvPub = new Writer().sized((w) => w.u32(0x01300000).u16(11).u32(0x2020002).tpm2b().u16(64)).finish();
  const pcrSel = new Writer().u32(2).u16(4).u8(3).bytes(new Uint8Array([0, 0x80, 0])).u16(11).u8(3).bytes(new Uint8Array([1, 0, 0])).finish();

  const parsers: [Uint8Array, (b: Uint8Array) => unknown][] = [
    ...samples.map((s) => [s, (b: Uint8Array) => {
      const p = publicFromBytes(b);
      // The server turns an untrusted EK public into a MakeCredential blob: must fail cleanly too.
      if (p.rsa || p.ecc) { try { makeCredential(p, id[0].akName, new Uint8Array(8)); } catch (e) { if (!(e instanceof TpmFormatError)) throw e; } }
    }] as [Uint8Array, (b: Uint8Array) => unknown]),
    [cred, fromToolsCredentialFile],
    [nvPub, (b) => { const q = new Reader(b); readNvPublic2b(q); q.end(); }],
    [pcrSel, (b) => { const q = new Reader(b); readPcrSelections(q); q.end(); }],
  ];
  for (const [good, parse] of parsers) {
    parse(good); // the unmutated sample parses
    for (let i = 0; i < 600; i++) {
      let b: Uint8Array;
      if (i < good.length) b = good.slice(0, i);                           // every truncation
      else if (i % 2) { b = new Uint8Array(good); for (let k = 0; k < 1 + r.int(3); k++) b[r.int(b.length)] ^= 1 << r.int(8); }
      else b = r.bytes(r.int(good.length + 8));
      try { parse(b); } catch (e) {
        if (!(e instanceof TpmFormatError)) throw new Error(`escaped ${(e as Error).constructor.name}: ${(e as Error).message}`);
      }
    }
  }
}, 60_000);
