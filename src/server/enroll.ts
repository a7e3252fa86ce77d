// Enrollment: an armed node on a trusted network trades its identity and a CSR for a client certificate, once.
// A node with a TPM must also prove it: the server answers with a MakeCredential challenge for the node's EK and AK,
// and issues the certificate only when the node returns the secret that only that TPM can recover.
import type { Db } from "./store/sql.ts";
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { verifyCsr, CsrError, type VerifiedCsr } from "../pki/csr.ts";
import { issueClientCert, randomSerial, type Ca } from "../pki/x509ca.ts";
import { makeEnrollmentChallenge } from "../tpm/makecredential.ts";
import { TpmFormatError } from "../tpm/marshal.ts";
import { arr, mac, nodeName, obj, opt, str, uuid, type Infer } from "./schema.ts";
import { trustedSource, type TrustOptions } from "./netaddr.ts";
import { ApiError } from "./apierror.ts";
import type { Audit } from "./audit.ts";
import { commitEnrollment, getNode, isArmed, keyUsedBefore, nodesByIdentity, savePendingChallenge, takePendingChallenge, type NodeRecord } from "./store/nodes.ts";

const b64 = (max: number) => str({ max, min: 4, pattern: /^[A-Za-z0-9+/]+={0,2}$/, what: "base64" });

export const enrollRequestSchema = obj({
  macs: arr(mac, { min: 1, max: 32 }),
  uuid: opt(uuid),
  name: opt(nodeName),
  csr: str({ max: 16 * 1024, min: 1 }),
  // The node's TPM: EK and AK public areas (TPM2B_PUBLIC) and the EK certificate (DER) if the TPM has one; base64.
  tpm: opt(obj({ ekPublic: b64(4096), akPublic: b64(4096), ekCertificate: opt(b64(8192)) })),
});
export type EnrollRequest = Infer<typeof enrollRequestSchema>;

export const activateRequestSchema = obj({
  id: str({ min: 32, max: 32, pattern: /^[0-9a-f]+$/, what: "a challenge id" }),
  secret: b64(512),
});
export type ActivateRequest = Infer<typeof activateRequestSchema>;

export interface EnrollDeps {
  db: Db;
  nodeCa: Ca;
  audit: Audit;
  trust: TrustOptions;
  nodeCertDays: number;
  challengeTtlMs?: number; // how long a TPM challenge stays answerable; default 120 s
  now?: () => number;
}

export interface EnrollResult { node: string; certificate: string; serial: string; notAfter: string }
export interface ChallengeResult { challenge: { id: string; credentialBlob: string; secret: string; expires: string } }

const sha256 = (b: Uint8Array | string) => createHash("sha256").update(b).digest();

/**
 * What an unauthenticated caller is told for every identity refusal (unknown MAC/UUID, several nodes, another name,
 * UUID or MAC than recorded, window not open): one message and code, so a refusal never says which node owns a MAC
 * or UUID, or whether one does. The reason is in the audit log.
 */
export const NO_ARMED_MATCH = "identity does not match an armed node";
const NO_ARMED_MATCH_HINT = `${NO_ARMED_MATCH} (the node must be registered with \`airroot node add\` and armed with \`airroot node arm\`; the server's audit log says why)`;

/** Audits `reason` (with the node, if known) and answers `shown` (default: the reason, which then must not name the node). */
type Refuse = (status: number, code: string, reason: string, node?: string, shown?: string) => never;

function refuser(d: EnrollDeps, remote: string, extra: Record<string, string | undefined>): Refuse {
  return (status, code, reason, node, shown) => {
    d.audit.record({ event: "enroll", outcome: "refused", remote, node, reason, ...extra });
    throw new ApiError(status, code, shown ?? reason);
  };
}

const EK_MISMATCH = "this node enrolled before with another TPM endorsement key; only that TPM may enroll it (if its TPM or board was replaced, an admin runs `airroot node arm NODE --new-tpm` on the server)";

/** An identity refusal: the details go to the audit log only. */
function noMatch(refuse: Refuse, reason: string, node?: string): never {
  return refuse(403, "identity-mismatch", reason, node, NO_ARMED_MATCH_HINT);
}

function checkTrusted(d: EnrollDeps, remote: string, refuse: Refuse): string {
  const t = trustedSource(remote, d.trust);
  if (!t.trusted) refuse(403, "untrusted-network", `enrollment is only accepted from trusted networks: ${t.why}`);
  return t.why;
}

async function checkCsr(d: EnrollDeps, pem: string, node: string, refuse: Refuse): Promise<VerifiedCsr> {
  let csr: VerifiedCsr | undefined;
  try { csr = await verifyCsr(pem); } catch (e) {
    if (e instanceof CsrError) refuse(400, "bad-csr", e.message, node);
    throw e;
  }
  if (await keyUsedBefore(d.db, csr!.keyId)) refuse(409, "replay", "this key was already certified once; generate a new key for a new enrollment", node);
  return csr!;
}

/** Signs and records atomically (the window is claimed in the same transaction). */
async function issue(d: EnrollDeps, node: string, csr: VerifiedCsr, ekPublic: string | undefined, remote: string, why: string, refuse: Refuse, now: number): Promise<EnrollResult> {
  const serial = randomSerial();
  const cert = await issueClientCert(d.nodeCa, csr.publicKey, node, serial, d.nodeCertDays);
  const fingerprint = sha256(new Uint8Array(cert.rawData)).toString("hex");
  const committed = await commitEnrollment(d.db, { node, serial, keyId: csr.keyId, notAfter: cert.notAfter.getTime(), fingerprint, ekPublic }, now);
  if (!committed.ok) {
    if (committed.code === "replay") refuse(409, "replay", committed.reason, node);
    noMatch(refuse, committed.reason, node);
  }
  d.audit.record({ event: "enroll", outcome: "ok", remote, node, serial, key: csr.keyAlgorithm, network: why, tpm: ekPublic ? "proven" : "none",
    revokedEarlier: committed.revoked });
  return { node, certificate: cert.toString("pem") + "\n", serial, notAfter: cert.notAfter.toISOString() };
}

/**
 * Checks, in order: trusted source network, identity → exactly one node, armed window, TPM EK continuity, CSR
 * signature, key never certified before. Then either issues (no TPM) or answers with a TPM challenge.
 * Every refusal is audited and leaves nothing stored.
 */
export async function enroll(d: EnrollDeps, req: EnrollRequest, remote: string): Promise<EnrollResult | ChallengeResult> {
  const now = d.now?.() ?? Date.now();
  const refuse = refuser(d, remote, { macs: req.macs.join(","), uuid: req.uuid });
  const why = checkTrusted(d, remote, refuse);

  const names = await nodesByIdentity(d.db, req.macs, req.uuid);
  if (names.length === 0) noMatch(refuse, "no node is registered with these MACs or UUID; add it with `airroot node add`");
  if (names.length > 1) noMatch(refuse, `these MACs/UUID belong to several nodes (${names.join(", ")}); fix the node records`);
  const node: NodeRecord = (await getNode(d.db, names[0]))!;
  if (req.name !== undefined && req.name !== node.name) noMatch(refuse, `the request names ${req.name} but its MACs/UUID belong to ${node.name}`, node.name);
  if (node.uuid && req.uuid !== node.uuid) noMatch(refuse, `SMBIOS UUID ${req.uuid ?? "(none)"} does not match the one recorded for ${node.name}`, node.name);
  if (node.macs.length && !req.macs.some((m) => node.macs.includes(m))) {
    noMatch(refuse, `none of the MACs matches those recorded for ${node.name}`, node.name);
  }
  if (!isArmed(node, now)) {
    const state = node.armed ? "its enrollment window expired" : "it is not armed";
    noMatch(refuse, `node ${node.name} cannot enroll: ${state}; run \`airroot node arm ${node.name}\``, node.name);
  }
  if (node.ekPublic && req.tpm?.ekPublic !== node.ekPublic) {
    refuse(409, "ek-mismatch", `node ${node.name} enrolled before with another TPM endorsement key; only that same TPM may enroll it (if its TPM or board was replaced: \`airroot node arm ${node.name} --new-tpm\`)`, node.name, EK_MISMATCH);
  }
  const csr = await checkCsr(d, req.csr, node.name, refuse);
  if (!req.tpm) return await issue(d, node.name, csr, undefined, remote, why, refuse, now);

  // TPM: the certificate waits until the node shows it can ActivateCredential with this EK and AK.
  const secret = randomBytes(32);
  let ch: ReturnType<typeof makeEnrollmentChallenge>;
  try { ch = makeEnrollmentChallenge(req.tpm.ekPublic, req.tpm.akPublic, secret); } catch (e) {
    if (e instanceof TpmFormatError) refuse(400, "bad-tpm-identity", e.message, node.name);
    throw e;
  }
  const id = randomBytes(16).toString("hex");
  const expires = now + (d.challengeTtlMs ?? 120_000);
  await savePendingChallenge(d.db, { id, node: node.name, csr: req.csr, ekPublic: req.tpm.ekPublic, secretSha256: sha256(secret).toString("hex"), expires });
  d.audit.record({ event: "enroll.challenge", outcome: "ok", remote, node: node.name, akName: ch!.akName });
  return { challenge: { id, credentialBlob: ch!.credentialBlob, secret: ch!.secret, expires: new Date(expires).toISOString() } };
}

/** Second step of a TPM enrollment: the challenge is consumed by the first answer, right or wrong. */
export async function activate(d: EnrollDeps, req: ActivateRequest, remote: string): Promise<EnrollResult> {
  const now = d.now?.() ?? Date.now();
  const refuse = refuser(d, remote, { challenge: req.id });
  const why = checkTrusted(d, remote, refuse);
  const p = await takePendingChallenge(d.db, req.id);
  if (!p) refuse(403, "unknown-challenge", "no such pending challenge (already answered, expired or never issued); enroll again");
  if (p!.expires <= now) refuse(403, "challenge-expired", "the TPM challenge expired; enroll again", p!.node);
  const got = sha256(new Uint8Array(Buffer.from(req.secret, "base64")));
  if (!timingSafeEqual(got, Buffer.from(p!.secretSha256, "hex"))) {
    refuse(403, "tpm-proof-failed", "the returned secret is wrong: the TPM that answered does not hold the EK and AK that were sent", p!.node);
  }
  const node = await getNode(d.db, p!.node);
  if (!node) noMatch(refuse, `node ${p!.node} was removed meanwhile`, p!.node);
  if (node!.ekPublic && node!.ekPublic !== p!.ekPublic) refuse(409, "ek-mismatch", `node ${node!.name} has another TPM recorded (if its TPM or board was replaced: \`airroot node arm ${node!.name} --new-tpm\`)`, node!.name, EK_MISMATCH);
  const csr = await checkCsr(d, p!.csr, node!.name, refuse);
  return await issue(d, node!.name, csr, p!.ekPublic, remote, why, refuse, now);
}
