// Enrollment: an armed node on a trusted network trades its identity and a CSR for a client certificate, once.
import type { Database } from "bun:sqlite";
import { verifyCsr, CsrError } from "../pki/csr.ts";
import { issueClientCert, randomSerial, type Ca } from "../pki/x509ca.ts";
import { arr, mac, nodeName, obj, opt, str, uuid, type Infer } from "./schema.ts";
import { trustedSource, type TrustOptions } from "./netaddr.ts";
import { ApiError } from "./apierror.ts";
import type { Audit } from "./audit.ts";
import { commitEnrollment, getNode, isArmed, keyUsedBefore, nodesByIdentity } from "./store/nodes.ts";

export const enrollRequestSchema = obj({
  macs: arr(mac, { min: 1, max: 32 }),
  uuid: opt(uuid),
  name: opt(nodeName),
  csr: str({ max: 16 * 1024, min: 1 }),
  // TPM2B_PUBLIC of the endorsement key, base64 (recorded; later enrollments must present the same one).
  ekPublic: opt(str({ max: 4096, min: 1, pattern: /^[A-Za-z0-9+/]+={0,2}$/, what: "base64" })),
});
export type EnrollRequest = Infer<typeof enrollRequestSchema>;

export interface EnrollDeps {
  db: Database;
  nodeCa: Ca;
  audit: Audit;
  trust: TrustOptions;
  nodeCertDays: number;
  now?: () => number;
}

export interface EnrollResult { node: string; certificate: string; serial: string; notAfter: string }

/**
 * Checks, in order: trusted source network, identity → exactly one node, armed window, TPM EK continuity, CSR
 * signature, key never certified before. Only then signs and records atomically. Every refusal is audited.
 */
export async function enroll(d: EnrollDeps, req: EnrollRequest, remote: string): Promise<EnrollResult> {
  const now = d.now?.() ?? Date.now();
  const refuse = (status: number, code: string, reason: string, node?: string): never => {
    d.audit.record({ event: "enroll", outcome: "refused", remote, node, reason, macs: req.macs.join(","), uuid: req.uuid });
    throw new ApiError(status, code, reason);
  };
  const t = trustedSource(remote, d.trust);
  if (!t.trusted) refuse(403, "untrusted-network", `enrollment is only accepted from trusted networks: ${t.why}`);

  const names = nodesByIdentity(d.db, req.macs, req.uuid);
  if (names.length === 0) refuse(403, "unknown-node", "no node is registered with these MACs or UUID; add it with `airroot node add`");
  if (names.length > 1) refuse(409, "ambiguous-identity", `these MACs/UUID belong to several nodes (${names.join(", ")}); fix the node records`);
  const node = getNode(d.db, names[0])!;
  if (req.name !== undefined && req.name !== node.name) refuse(403, "identity-mismatch", `the request names ${req.name} but its MACs/UUID belong to ${node.name}`, node.name);
  if (node.uuid && req.uuid !== node.uuid) refuse(403, "identity-mismatch", `SMBIOS UUID ${req.uuid ?? "(none)"} does not match the one recorded for ${node.name}`, node.name);
  if (node.macs.length && !req.macs.some((m) => node.macs.includes(m))) {
    refuse(403, "identity-mismatch", `none of the MACs matches those recorded for ${node.name}`, node.name);
  }
  if (!isArmed(node, now)) {
    const why = node.armed ? "its enrollment window expired" : "it is not armed";
    refuse(403, "not-armed", `node ${node.name} cannot enroll: ${why}; run \`airroot node arm ${node.name}\``, node.name);
  }
  if (node.ekPublic && req.ekPublic !== node.ekPublic) {
    refuse(409, "ek-mismatch", `node ${node.name} enrolled before with a TPM endorsement key; only that same key is accepted`, node.name);
  }
  let csr;
  try { csr = await verifyCsr(req.csr); } catch (e) {
    if (e instanceof CsrError) refuse(400, "bad-csr", e.message, node.name);
    throw e;
  }
  if (keyUsedBefore(d.db, csr!.keyId)) refuse(409, "replay", "this key was already certified once; generate a new key for a new enrollment", node.name);

  const serial = randomSerial();
  const cert = await issueClientCert(d.nodeCa, csr!.publicKey, node.name, serial, d.nodeCertDays);
  const committed = commitEnrollment(d.db, { node: node.name, serial, keyId: csr!.keyId, notAfter: cert.notAfter.getTime(), ekPublic: req.ekPublic }, now);
  if (!committed.ok) refuse(committed.code === "replay" ? 409 : 403, committed.code, committed.reason, node.name);
  d.audit.record({ event: "enroll", outcome: "ok", remote, node: node.name, serial, key: csr!.keyAlgorithm, network: t.why });
  return { node: node.name, certificate: cert.toString("pem") + "\n", serial, notAfter: cert.notAfter.toISOString() };
}
