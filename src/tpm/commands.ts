// TPM 2.0 commands airroot uses: marshalling of each command and parsing of its response.
import { TPM_ALG, TPM_CAP, TPM_CC, TPM_RH, TPM_ST, TPM_SU, HASHES } from "./constants";
import { Reader, TpmFormatError, Writer } from "./marshal";
import { RC, TpmError } from "./rc";
import {
  type NvPublic, type PcrSelection, type PublicTemplate, type TpmPublic,
  marshalNvPublic, marshalPublic, readNvPublic2b, readPcrSelections, readPublic2b, writePcrSelections,
} from "./structures";
import type { TpmTransport } from "./transport";

/** One entry of a command's authorization area. */
export interface Authorization {
  handle: number;          // TPM_RS_PW or a session handle
  nonce?: Uint8Array;
  attributes?: number;
  hmac?: Uint8Array;       // the password for TPM_RS_PW
}

/** Password authorization (most hierarchies and our objects use an empty password). */
export const passwordAuth = (password: Uint8Array = new Uint8Array(0)): Authorization =>
  ({ handle: TPM_RH.PW, hmac: password });

/** An unbound, unsalted policy session with no authValue in its policy needs no HMAC. */
export const policyAuth = (session: number, continueSession = false): Authorization =>
  ({ handle: session, attributes: continueSession ? 1 : 0 });

export interface CommandSpec {
  cc: number;
  handles?: number[];
  auths?: Authorization[];
  params?: Uint8Array;
  responseHandles?: number;
  context?: string;          // named in errors, e.g. "PCR 15"
}

export interface CreatedObject {
  handle: number;
  public: TpmPublic;
  name: Uint8Array;
}

export interface PcrReadResult { updateCounter: number; selection: PcrSelection[]; values: Uint8Array[] }

const MAX_RETRIES = 20;
const MAX_LIST = 1024; // caps list counts in replies so garbage cannot make us loop long

/** Low-level TPM: one method per command; no policy, no lifecycle. */
export class Tpm {
  constructor(readonly transport: TpmTransport) {}

  close(): Promise<void> { return this.transport.close(); }

  async execute(spec: CommandSpec): Promise<Response> {
    const auths = spec.auths ?? [];
    const w = new Writer().u16(auths.length ? TPM_ST.SESSIONS : TPM_ST.NO_SESSIONS).u32(0).u32(spec.cc);
    for (const h of spec.handles ?? []) w.u32(h);
    if (auths.length) {
      const a = new Writer();
      for (const s of auths) a.u32(s.handle).tpm2b(s.nonce).u8(s.attributes ?? 0).tpm2b(s.hmac);
      const area = a.finish();
      w.u32(area.length).bytes(area);
    }
    if (spec.params) w.bytes(spec.params);
    const cmd = w.finish();
    new DataView(cmd.buffer).setUint32(2, cmd.length);
    // RETRY/YIELDED/TESTING are transient warnings: the TPM asks to resend the same command. Bounded.
    for (let attempt = 1; ; attempt++) {
      const rsp = await this.transport.send(cmd);
      try {
        return parseResponse(rsp, spec);
      } catch (e) {
        const transient = e instanceof TpmError && [RC.RETRY, RC.YIELDED, RC.TESTING].includes(e.rc as never);
        if (!transient || attempt >= MAX_RETRIES) throw e;
        await Bun.sleep(Math.min(10 * attempt, 200));
      }
    }
  }

  async startup(clear = true): Promise<"started" | "already"> {
    try {
      await this.execute({ cc: TPM_CC.Startup, params: new Writer().u16(clear ? TPM_SU.CLEAR : TPM_SU.STATE).finish() });
      return "started";
    } catch (e) {
      if (e instanceof TpmError && e.base === RC.INITIALIZE) return "already";
      throw e;
    }
  }

  async getRandom(n: number): Promise<Uint8Array> {
    const out: Uint8Array[] = [];
    let have = 0;
    // The TPM returns at most one digest's worth per call; bound the loop by the request size.
    for (let i = 0; have < n && i < n + 4; i++) {
      const { params } = await this.execute({ cc: TPM_CC.GetRandom, params: new Writer().u16(Math.min(n - have, 64)).finish() });
      const b = params.tpm2b("randomBytes", 64);
      params.end("GetRandom response");
      if (b.length === 0) throw new TpmFormatError("TPM2_GetRandom returned no bytes");
      out.push(b); have += b.length;
    }
    return new Uint8Array(Buffer.concat(out)).slice(0, n);
  }

  private async capability(cap: number, property: number, count: number): Promise<{ more: boolean; data: Reader }> {
    const { params } = await this.execute({
      cc: TPM_CC.GetCapability, params: new Writer().u32(cap).u32(property).u32(count).finish(),
    });
    const more = params.u8("moreData") !== 0;
    const got = params.u32("capability");
    if (got !== cap) throw new TpmFormatError(`TPM2_GetCapability: asked for capability ${cap}, got ${got}`);
    return { more, data: params };
  }

  /** Handles of one type (first byte of `from`), e.g. persistent objects 0x81000000 or NV indices 0x01000000. */
  async getHandles(from: number, to = ((from & 0xff000000) | 0x00ffffff) >>> 0): Promise<number[]> {
    const out: number[] = [];
    let next = from;
    for (let round = 0; round < 64; round++) {
      const { more, data } = await this.capability(TPM_CAP.HANDLES, next, 256);
      const n = data.count("TPML_HANDLE", MAX_LIST);
      let last = next - 1;
      for (let i = 0; i < n; i++) {
        const h = data.u32("handle");
        if (h <= last) throw new TpmFormatError("TPM2_GetCapability(HANDLES): handles not ascending");
        last = h;
        if (h >= from && h <= to) out.push(h);
      }
      data.end("TPML_HANDLE");
      if (!more || n === 0 || last >= to) return out;
      next = last + 1;
    }
    throw new TpmFormatError("TPM2_GetCapability(HANDLES): too many rounds of moreData");
  }

  /** Allocated PCR banks and which PCRs each has. */
  async getPcrBanks(): Promise<PcrSelection[]> {
    const { data } = await this.capability(TPM_CAP.PCRS, 0, 1);
    const sel = readPcrSelections(data);
    data.end("TPML_PCR_SELECTION");
    return sel;
  }

  /** TPM properties (TPM_PT_*), as a map property → value. */
  async getProperties(first: number, count: number): Promise<Map<number, number>> {
    const { data } = await this.capability(TPM_CAP.TPM_PROPERTIES, first, count);
    const n = data.count("TPML_TAGGED_TPM_PROPERTY", MAX_LIST);
    const out = new Map<number, number>();
    for (let i = 0; i < n; i++) out.set(data.u32("property"), data.u32("value"));
    data.end("TPML_TAGGED_TPM_PROPERTY");
    return out;
  }

  async pcrRead(sel: PcrSelection[]): Promise<PcrReadResult> {
    const { params } = await this.execute({ cc: TPM_CC.PCR_Read, params: writePcrSelections(new Writer(), sel).finish() });
    const updateCounter = params.u32("pcrUpdateCounter");
    const selection = readPcrSelections(params);
    const n = params.count("TPML_DIGEST", 8);
    const values: Uint8Array[] = [];
    for (let i = 0; i < n; i++) values.push(params.tpm2b("digest", 64));
    params.end("PCR_Read response");
    return { updateCounter, selection, values };
  }

  /** Extends one PCR in each listed bank with the given digest (size must match the bank's hash). */
  async pcrExtend(pcr: number, digests: { hash: number; digest: Uint8Array }[]): Promise<void> {
    const w = new Writer().u32(digests.length);
    for (const d of digests) {
      if (HASHES[d.hash] && d.digest.length !== HASHES[d.hash].size) throw new RangeError(`digest size ${d.digest.length} does not match bank ${d.hash}`);
      w.u16(d.hash).bytes(d.digest);
    }
    const { params } = await this.execute({ cc: TPM_CC.PCR_Extend, handles: [pcr], auths: [passwordAuth()], params: w.finish(), context: `PCR ${pcr}` });
    params.end("PCR_Extend response");
  }

  async createPrimary(hierarchy: number, template: PublicTemplate, hierarchyAuth?: Uint8Array): Promise<CreatedObject> {
    const { handles, params } = await this.execute({
      cc: TPM_CC.CreatePrimary, handles: [hierarchy], auths: [passwordAuth(hierarchyAuth)],
      params: createParams(template, {}), responseHandles: 1,
    });
    const pub = readPublic2b(params);
    skipCreation(params);
    const name = params.tpm2b("name", 66);
    params.end("CreatePrimary response");
    return { handle: handles[0], public: pub, name };
  }

  async create(parent: number, template: PublicTemplate, sensitive: { auth?: Uint8Array; data?: Uint8Array }): Promise<{ private: Uint8Array; public: TpmPublic }> {
    const { params } = await this.execute({
      cc: TPM_CC.Create, handles: [parent], auths: [passwordAuth()], params: createParams(template, sensitive),
    });
    return parseCreateResponse(params);
  }

  async load(parent: number, priv: Uint8Array, pub: TpmPublic): Promise<{ handle: number; name: Uint8Array }> {
    const { handles, params } = await this.execute({
      cc: TPM_CC.Load, handles: [parent], auths: [passwordAuth()], responseHandles: 1,
      params: new Writer().tpm2b(priv).tpm2b(pub.raw).finish(),
    });
    const name = params.tpm2b("name", 66);
    params.end("Load response");
    return { handle: handles[0], name };
  }

  async unseal(item: number, auth: Authorization): Promise<Uint8Array> {
    const { params } = await this.execute({ cc: TPM_CC.Unseal, handles: [item], auths: [auth], context: `object 0x${item.toString(16)}` });
    const data = params.tpm2b("outData", 128);
    params.end("Unseal response");
    return data;
  }

  async readPublic(handle: number): Promise<{ public: TpmPublic; name: Uint8Array }> {
    const { params } = await this.execute({ cc: TPM_CC.ReadPublic, handles: [handle], context: `handle 0x${handle.toString(16)}` });
    const pub = readPublic2b(params);
    const name = params.tpm2b("name", 66);
    params.tpm2b("qualifiedName", 66);
    params.end("ReadPublic response");
    return { public: pub, name };
  }

  /** Makes a loaded object persistent at `persistent`, or (object === persistent) evicts it. */
  async evictControl(object: number, persistent: number, ownerAuth?: Uint8Array): Promise<void> {
    const { params } = await this.execute({
      cc: TPM_CC.EvictControl, handles: [TPM_RH.OWNER, object], auths: [passwordAuth(ownerAuth)],
      params: new Writer().u32(persistent).finish(), context: `0x${persistent.toString(16)}`,
    });
    params.end("EvictControl response");
  }

  async flushContext(handle: number): Promise<void> {
    const { params } = await this.execute({ cc: TPM_CC.FlushContext, params: new Writer().u32(handle).finish(), context: `0x${handle.toString(16)}` });
    params.end("FlushContext response");
  }

  /** Flushes and ignores errors (cleanup paths must not mask the original error). */
  async flushQuietly(handle: number | undefined): Promise<void> {
    if (handle === undefined) return;
    await this.flushContext(handle).catch(() => undefined);
  }

  /** Starts a session; `salt` makes it salted (encryptedSalt to tpmKey) with a symmetric algorithm for encryption. */
  async startAuthSession(type: number, hash: number, nonceCaller: Uint8Array,
    salt?: { tpmKey: number; encryptedSalt: Uint8Array; symmetric: { alg: number; keyBits: number; mode: number } }): Promise<{ handle: number; nonceTpm: Uint8Array }> {
    const w = new Writer().tpm2b(nonceCaller).tpm2b(salt?.encryptedSalt).u8(type);
    if (salt) w.u16(salt.symmetric.alg).u16(salt.symmetric.keyBits).u16(salt.symmetric.mode);
    else w.u16(TPM_ALG.NULL);
    const { handles, params } = await this.execute({
      cc: TPM_CC.StartAuthSession, handles: [salt?.tpmKey ?? TPM_RH.NULL, TPM_RH.NULL], responseHandles: 1, params: w.u16(hash).finish(),
    });
    const nonceTpm = params.tpm2b("nonceTPM", 64);
    params.end("StartAuthSession response");
    return { handle: handles[0], nonceTpm };
  }

  async policyPcr(session: number, sel: PcrSelection[], pcrDigest = new Uint8Array(0)): Promise<void> {
    const { params } = await this.execute({
      cc: TPM_CC.PolicyPCR, handles: [session], params: writePcrSelections(new Writer().tpm2b(pcrDigest), sel).finish(),
    });
    params.end("PolicyPCR response");
  }

  /** PolicySecret with the given entity (e.g. TPM_RH_ENDORSEMENT for the EK's policy) authorized by password. */
  async policySecret(authHandle: number, session: number, password?: Uint8Array): Promise<void> {
    const { params } = await this.execute({
      cc: TPM_CC.PolicySecret, handles: [authHandle, session], auths: [passwordAuth(password)],
      params: new Writer().tpm2b().tpm2b().tpm2b().i32(0).finish(),
    });
    params.tpm2b("timeout", 8);
    params.u16("policyTicket.tag"); params.u32("policyTicket.hierarchy"); params.tpm2b("policyTicket.digest", 64);
    params.end("PolicySecret response");
  }

  async policyGetDigest(session: number): Promise<Uint8Array> {
    const { params } = await this.execute({ cc: TPM_CC.PolicyGetDigest, handles: [session] });
    const d = params.tpm2b("policyDigest", 64);
    params.end("PolicyGetDigest response");
    return d;
  }

  /** Decrypts a MakeCredential blob: `activate` is the object whose name was used, `key` the EK. */
  async activateCredential(activate: number, key: number, keyAuth: Authorization, credentialBlob: Uint8Array, secret: Uint8Array): Promise<Uint8Array> {
    const { params } = await this.execute({
      cc: TPM_CC.ActivateCredential, handles: [activate, key], auths: [passwordAuth(), keyAuth],
      params: new Writer().tpm2b(credentialBlob).tpm2b(secret).finish(),
    });
    const cert = params.tpm2b("certInfo", 64);
    params.end("ActivateCredential response");
    return cert;
  }

  async nvDefineSpace(pub: Omit<NvPublic, "raw">, ownerAuth?: Uint8Array): Promise<void> {
    const { params } = await this.execute({
      cc: TPM_CC.NV_DefineSpace, handles: [TPM_RH.OWNER], auths: [passwordAuth(ownerAuth)],
      params: new Writer().tpm2b().tpm2b(marshalNvPublic(pub)).finish(), context: `NV 0x${pub.index.toString(16)}`,
    });
    params.end("NV_DefineSpace response");
  }

  async nvUndefineSpace(index: number, ownerAuth?: Uint8Array): Promise<void> {
    const { params } = await this.execute({
      cc: TPM_CC.NV_UndefineSpace, handles: [TPM_RH.OWNER, index], auths: [passwordAuth(ownerAuth)], context: `NV 0x${index.toString(16)}`,
    });
    params.end("NV_UndefineSpace response");
  }

  async nvReadPublic(index: number): Promise<{ public: NvPublic; name: Uint8Array }> {
    const { params } = await this.execute({ cc: TPM_CC.NV_ReadPublic, handles: [index], context: `NV 0x${index.toString(16)}` });
    const pub = readNvPublic2b(params);
    const name = params.tpm2b("nvName", 66);
    params.end("NV_ReadPublic response");
    return { public: pub, name };
  }

  /** Writes `data` at `offset`, `chunk` bytes per command (TPM_PT_NV_BUFFER_MAX). authHandle: owner or the index. */
  async nvWrite(authHandle: number, index: number, data: Uint8Array, offset = 0, chunk = 512, auth?: Uint8Array): Promise<void> {
    for (let o = 0; o < data.length; o += chunk) {
      const part = data.subarray(o, Math.min(data.length, o + chunk));
      const { params } = await this.execute({
        cc: TPM_CC.NV_Write, handles: [authHandle, index], auths: [passwordAuth(auth)],
        params: new Writer().tpm2b(part).u16(offset + o).finish(), context: `NV 0x${index.toString(16)}`,
      });
      params.end("NV_Write response");
    }
  }

  async nvRead(authHandle: number, index: number, size: number, offset = 0, chunk = 512, auth?: Uint8Array): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    for (let o = 0; o < size; o += chunk) {
      const n = Math.min(chunk, size - o);
      const { params } = await this.execute({
        cc: TPM_CC.NV_Read, handles: [authHandle, index], auths: [passwordAuth(auth)],
        params: new Writer().u16(n).u16(offset + o).finish(), context: `NV 0x${index.toString(16)}`,
      });
      const d = params.tpm2b("data", n);
      params.end("NV_Read response");
      if (d.length !== n) throw new TpmFormatError(`TPM2_NV_Read returned ${d.length} bytes, asked for ${n}`);
      parts.push(d);
    }
    return new Uint8Array(Buffer.concat(parts));
  }
}

/** Splits a response into handles and a parameter reader; throws TpmError on a TPM error code. */
/** Parameters of Create and CreatePrimary (inSensitive first: the one parameter encryption would cover). */
export function createParams(template: PublicTemplate, sensitive: { auth?: Uint8Array; data?: Uint8Array }): Uint8Array {
  return new Writer()
    .sized((s) => s.tpm2b(sensitive.auth).tpm2b(sensitive.data))
    .sized((s) => s.bytes(marshalPublic(template)))
    .tpm2b()                       // outsideInfo
    .u32(0)                        // creationPCR: none
    .finish();
}

function skipCreation(r: Reader): void {
  r.tpm2b("creationData");
  r.tpm2b("creationHash", 64);
  r.u16("creationTicket.tag"); r.u32("creationTicket.hierarchy"); r.tpm2b("creationTicket.digest", 64);
}

export function parseCreateResponse(params: Reader): { private: Uint8Array; public: TpmPublic } {
  const priv = params.tpm2b("outPrivate");
  const pub = readPublic2b(params);
  skipCreation(params);
  params.end("Create response");
  return { private: priv, public: pub };
}

/** One response authorization entry (what the TPM returns per session). */
export interface ResponseAuth { nonce: Uint8Array; attributes: number; hmac: Uint8Array }
export interface Response { handles: number[]; params: Reader; paramBytes: Uint8Array; auths: ResponseAuth[] }

export function parseResponse(rsp: Uint8Array, spec: Pick<CommandSpec, "cc" | "auths" | "responseHandles" | "context">): Response {
  const r = new Reader(rsp, `TPM2_response(0x${spec.cc.toString(16)})`);
  const tag = r.u16("tag");
  const size = r.u32("responseSize");
  if (size !== rsp.length) throw new TpmFormatError(`TPM response size field ${size} != ${rsp.length} bytes received`);
  const rc = r.u32("responseCode");
  if (rc !== 0) throw new TpmError(spec.cc, rc, spec.context);
  const nAuth = spec.auths?.length ?? 0;
  const expectTag = nAuth ? TPM_ST.SESSIONS : TPM_ST.NO_SESSIONS;
  if (tag !== expectTag) throw new TpmFormatError(`TPM response tag 0x${tag.toString(16)}, expected 0x${expectTag.toString(16)}`);
  const handles: number[] = [];
  for (let i = 0; i < (spec.responseHandles ?? 0); i++) handles.push(r.u32("handle"));
  const what = `TPM2_response(0x${spec.cc.toString(16)}) parameters`;
  if (!nAuth) { const paramBytes = r.bytes(r.remaining, "parameters"); return { handles, params: new Reader(paramBytes, what), paramBytes, auths: [] }; }
  const paramBytes = r.bytes(r.u32("parameterSize"), "parameters");
  // Response HMACs are checked by the salted session that asked for them (SaltedSession); password and
  // unsalted policy sessions carry none worth checking.
  const auths: ResponseAuth[] = [];
  for (let i = 0; i < nAuth; i++) auths.push({ nonce: r.tpm2b("nonce", 64), attributes: r.u8("sessionAttributes"), hmac: r.tpm2b("hmac", 64) });
  r.end("response authorization area");
  return { handles, params: new Reader(paramBytes, what), paramBytes, auths };
}
