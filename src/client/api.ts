// Node-side client for the airroot node API: enroll (CSR → client certificate), then config, SSH host
// certificates, boot stage reports and the boot reporter's one-boot token over mutual TLS; and the reporter's own
// stage reports with that token (no client certificate).
import { makeCsr } from "../pki/csr.ts";
import { toPem } from "../pki/pem.ts";
import type { NodeConfig } from "../server/selfapi.ts";
import type { ChallengeResult, EnrollResult } from "../server/enroll.ts";
import type { WireIdentity } from "../tpm/attest.ts";
import { challengeFromWire } from "../tpm/makecredential.ts";
import { ApiCallError, ApiHttp } from "./http.ts";

export interface EnrollIdentity { macs: string[]; uuid?: string; name?: string }

/** The node's TPM as enrollment needs it: its public identity and ActivateCredential (see src/tpm/attest.ts). */
export interface TpmProver {
  identity: WireIdentity;
  activate(credentialBlob: Uint8Array, secret: Uint8Array): Promise<Uint8Array>;
}

export interface NodeCredential { keyPem: string; certPem: string; node: string; serial: string; notAfter: string }

/**
 * Generates a fresh key, sends its CSR with the node's identity (and TPM identity, if given), answers the server's
 * TPM challenge, and returns key + certificate. The private key never leaves this process.
 */
export async function enrollNode(serverUrl: string, siteCa: string, id: EnrollIdentity, tpm?: TpmProver): Promise<NodeCredential> {
  const { csrPem, keys } = await makeCsr(id.name ?? "airroot-node");
  const http = new ApiHttp(serverUrl, { ca: siteCa });
  try {
    let r = await http.call<EnrollResult | ChallengeResult>("POST", "/api/v1/enroll", {
      macs: id.macs, csr: csrPem,
      ...(id.uuid ? { uuid: id.uuid } : {}), ...(id.name ? { name: id.name } : {}), ...(tpm ? { tpm: tpm.identity } : {}),
    });
    if ("challenge" in r) {
      if (!tpm) throw new ApiCallError("POST /api/v1/enroll", 200, "bad-reply", "server sent a TPM challenge although no TPM identity was sent");
      const blob = challengeFromWire(r.challenge);
      const secret = await tpm.activate(blob.credentialBlob, blob.secret);
      r = await http.call<EnrollResult>("POST", "/api/v1/enroll/activate", { id: r.challenge.id, secret: Buffer.from(secret).toString("base64") });
    }
    if (!("certificate" in r) || typeof r.certificate !== "string" || !r.certificate.includes("BEGIN CERTIFICATE")) {
      throw new ApiCallError("POST /api/v1/enroll", 200, "bad-reply", "reply carries no certificate");
    }
    const keyPem = toPem("PRIVATE KEY", await crypto.subtle.exportKey("pkcs8", keys.privateKey));
    return { keyPem, certPem: r.certificate, node: r.node, serial: r.serial, notAfter: r.notAfter };
  } finally { await http.close(); }
}

export interface SshCertReply {
  principals: string[];
  validAfter: string;
  validBefore: string;
  certificates: { type: string; serial: string; certificate: string }[];
}

/** Calls that authenticate with the node's client certificate. */
export class NodeApi {
  private http: ApiHttp;
  constructor(serverUrl: string, siteCa: string, cred: { keyPem: string; certPem: string }) {
    this.http = new ApiHttp(serverUrl, { ca: siteCa, cert: cred.certPem, key: cred.keyPem });
  }
  config(): Promise<NodeConfig> { return this.http.call("GET", "/api/v1/self/config"); }
  sshCertificates(hostKeys: string[]): Promise<SshCertReply> { return this.http.call("POST", "/api/v1/self/sshcert", { hostKeys }); }
  async status(stage: string, detail?: string, digest?: string): Promise<void> {
    await this.http.call("POST", "/api/v1/self/status", { stage, ...(detail ? { detail } : {}), ...(digest ? { digest } : {}) });
  }
  /** A one-boot token for the boot reporter (replaces any earlier one of this node); longer-lived for an untethering boot. */
  async reportToken(o: { untether?: boolean } = {}): Promise<ReportToken> {
    const r = await this.http.call<ReportToken>("POST", "/api/v1/self/report-token", o.untether ? { untether: true } : undefined);
    if (typeof r?.token !== "string" || !/^[A-Za-z0-9_-]{43}$/.test(r.token) || typeof r.expires !== "string")
      throw new ApiCallError("POST /api/v1/self/report-token", 200, "bad-reply", "reply carries no report token");
    return { token: r.token, expires: r.expires };
  }
  close(): Promise<void> { return this.http.close(); }
}

export interface ReportToken { token: string; expires: string }

/**
 * A stage report after switch_root, made with the node's one-boot report token over server-authenticated TLS (the
 * site CA pins the server; no client certificate: the reporter has none).
 */
export async function reportWithToken(serverUrl: string, siteCa: string,
  r: { node: string; token: string; stage: string; detail?: string; more?: boolean }): Promise<void> {
  const http = new ApiHttp(serverUrl, { ca: siteCa });
  try {
    await http.call("POST", "/api/v1/report", { node: r.node, token: r.token, stage: r.stage, ...(r.detail ? { detail: r.detail } : {}),
      ...(r.more ? { more: true } : {}) });
  } finally { await http.close(); }
}
