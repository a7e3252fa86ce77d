// The node credential across boots (issue 4's lifecycle): unseal it from the TPM and use it; if the TPM holds none,
// or the server no longer accepts it (revoked/unknown → 401), enroll again (the node must be armed) and seal the new
// one; finally, optionally, lock the PCR so nothing later in this boot can unseal it.
import { ApiCallError } from "./http.ts";
import { enrollNode, type NodeCredential } from "./api.ts";
import { findServers, useCredential, withFailover, type FirstContactOptions, type FirstContactResult } from "./firstcontact.ts";
import { tpmProver } from "./tpmprover.ts";
import { CredentialError, evictCredential, lockCredential, sealCredential, unsealCredential, type CredentialOptions } from "../tpm/credential.ts";
import { openTpmOrWarn, type Tpm } from "../tpm/tpm.ts";

export interface TrustOptions extends Omit<FirstContactOptions, "tpm"> {
  /** TPM to keep the credential in (device, device:/dev/tpmrm0, swtpm:HOST:PORT); undefined = no TPM. */
  tpm?: string;
  /** With `tpm` set but no TPM present: refuse (default) or go on without one, loudly. */
  noTpm?: "refuse" | "warn";
  /** Extend the lock PCR once config and certificates are in hand (what `init` does before switch_root). */
  lock?: boolean;
  credentialOptions?: CredentialOptions;
}

export interface TrustResult extends FirstContactResult {
  /** "sealed": the TPM's credential was accepted; "enrolled": a new enrollment happened in this run. */
  origin: "sealed" | "enrolled";
  /** With origin "enrolled": the server that enrolled the node (`server` is the one that gave the config). */
  enrolledVia?: string;
  sealedInTpm: boolean;
  locked: boolean;
}

const CREDENTIAL_FORMAT = "airroot-node-credential/1";

export function encodeCredential(c: NodeCredential): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({ format: CREDENTIAL_FORMAT, ...c }));
}

/** Parses what the TPM gave back; anything unexpected is "corrupt" (evict and re-enroll), never a crash. */
export function decodeCredential(bytes: Uint8Array): NodeCredential {
  let v: Record<string, unknown>;
  try { v = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes)); } catch {
    throw new CredentialError("corrupt", "the sealed credential is not valid JSON");
  }
  const str = (k: string) => {
    if (typeof v?.[k] !== "string" || (v[k] as string).length === 0) throw new CredentialError("corrupt", `the sealed credential has no ${k}`);
    return v[k] as string;
  };
  if (v?.format !== CREDENTIAL_FORMAT) throw new CredentialError("corrupt", `the sealed credential has an unknown format ${JSON.stringify(v?.format)}`);
  return { keyPem: str("keyPem"), certPem: str("certPem"), node: str("node"), serial: str("serial"), notAfter: str("notAfter") };
}

async function withOpenTpm<T>(o: TrustOptions, fn: (t: Tpm) => Promise<T>): Promise<T | undefined> {
  const t = await openTpmOrWarn(o.tpm!, { noTpm: o.noTpm, log: o.log }, { timeoutMs: 30_000 });
  if (!t) return undefined;
  try { return await fn(t); } finally { await t.close(); }
}

export async function establishTrust(o: TrustOptions): Promise<TrustResult> {
  const log = o.log ?? (() => {});
  const servers = await findServers(o);
  let result: FirstContactResult | undefined;
  let origin: TrustResult["origin"] = "sealed";
  let enrolledVia: string | undefined;
  let sealedInTpm = false;

  if (o.tpm) {
    const sealed = await withOpenTpm(o, async (t) => {
      try { return decodeCredential(await unsealCredential(t, o.credentialOptions)); } catch (e) {
        if (!(e instanceof CredentialError)) throw e;
        if (e.kind === "absent") { log("no sealed credential in the TPM: enrolling"); return undefined; }
        if (e.kind === "locked") throw new Error(`the TPM credential is already locked for this boot (${e.message}); reboot to use it again`);
        if (e.kind === "unsupported") throw e;
        log(`the sealed credential cannot be used (${e.message}): evicting it and enrolling again`);
        await evictCredential(t, o.credentialOptions);
        return undefined;
      }
    });
    if (sealed) {
      try {
        result = await useCredential({ ...o, tpm: undefined }, servers, servers[0], sealed, "credential unsealed from the TPM");
        sealedInTpm = true;
        log(`using the credential sealed in the TPM (node ${sealed.node}, serial ${sealed.serial})`);
      } catch (e) {
        if (!(e instanceof ApiCallError && e.needsEnrollment)) throw e;
        log(`the server no longer accepts the sealed credential (${e.message}): evicting it; enrolling again (the node must be armed)`);
        await withOpenTpm(o, (t) => evictCredential(t, o.credentialOptions));
      }
    }
  }

  if (!result) {
    origin = "enrolled";
    const prover = o.tpm ? await tpmProver(o.tpm).catch((e) => { if (o.noTpm === "warn") return undefined; throw e; }) : undefined;
    const { server, value: credential } = await withFailover(servers,
      (s) => enrollNode(s, o.siteCa, { macs: o.macs, uuid: o.uuid, name: o.name }, prover), o.log);
    enrolledVia = server;
    if (o.tpm) {
      const info = await withOpenTpm(o, (t) => sealCredential(t, encodeCredential(credential), o.credentialOptions));
      sealedInTpm = info !== undefined;
      if (info) log(`sealed the new credential in the TPM`);
    }
    result = await useCredential({ ...o, tpm: undefined }, servers, server, credential, `enrolled via ${server}`);
  }

  let locked = false;
  if (o.lock && o.tpm) {
    locked = (await withOpenTpm(o, (t) => lockCredential(t, o.credentialOptions))) !== undefined;
    if (locked) log("locked the TPM credential for the rest of this boot");
  }
  return { ...result, origin, ...(enrolledVia ? { enrolledVia } : {}), sealedInTpm, locked };
}
