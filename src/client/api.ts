// Node-side client for the airroot node API: enroll (CSR → client certificate), then config, SSH host
// certificates and boot stage reports over mutual TLS.
import { makeCsr } from "../pki/csr.ts";
import { toPem } from "../pki/pem.ts";
import type { NodeConfig } from "../server/selfapi.ts";
import type { EnrollResult } from "../server/enroll.ts";
import { ApiHttp } from "./http.ts";

export interface EnrollIdentity { macs: string[]; uuid?: string; name?: string; ekPublic?: string }

export interface NodeCredential { keyPem: string; certPem: string; node: string; serial: string; notAfter: string }

/** Generates a fresh key, sends its CSR with the node's identity, returns key + certificate (key never leaves). */
export async function enrollNode(serverUrl: string, siteCa: string, id: EnrollIdentity): Promise<NodeCredential> {
  const { csrPem, keys } = await makeCsr(id.name ?? "airroot-node");
  const http = new ApiHttp(serverUrl, { ca: siteCa });
  try {
    const r = await http.call<EnrollResult>("POST", "/api/v1/enroll", {
      macs: id.macs, csr: csrPem,
      ...(id.uuid ? { uuid: id.uuid } : {}), ...(id.name ? { name: id.name } : {}), ...(id.ekPublic ? { ekPublic: id.ekPublic } : {}),
    });
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
  close(): Promise<void> { return this.http.close(); }
}
