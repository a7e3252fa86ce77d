// OpenSSH host certificates (PROTOCOL.certkeys, "*-cert-v01@openssh.com") signed by an ed25519 SSH CA.
import { randomBytes } from "node:crypto";
import { ed25519Blob, signEd25519, type Ed25519Key, type SshPublicKey } from "./sshkey.ts";
import { SshReader, SshWriter } from "./sshwire.ts";

export const SSH_CERT_HOST = 2;

export interface HostCertOptions {
  ca: Ed25519Key;
  hostKey: SshPublicKey;       // already validated by parsePublicKey
  principals: string[];        // names and addresses the host may be reached as
  serial: bigint;
  keyId: string;
  validAfter: Date;
  validBefore: Date;
}

/** Builds and signs a host certificate; returns the one-line OpenSSH form sshd's HostCertificate expects. */
export function issueHostCertificate(o: HostCertOptions): string {
  if (o.principals.length === 0) throw new Error("SSH host certificate: at least one principal is required");
  if (o.validBefore <= o.validAfter) throw new Error("SSH host certificate: validity window is empty");
  const certType = `${o.hostKey.type}-cert-v01@openssh.com`;
  // The key's own fields follow its type name in the blob; the certificate carries them unchanged.
  const r = new SshReader(o.hostKey.blob);
  r.text();
  const keyFields = o.hostKey.blob.subarray(r.offset);
  const principals = new SshWriter();
  for (const p of o.principals) principals.string(p);
  const secs = (d: Date) => BigInt(Math.floor(d.getTime() / 1000));
  const body = new SshWriter()
    .string(certType)
    .string(new Uint8Array(randomBytes(32)))
    .raw(keyFields)
    .u64(o.serial)
    .u32(SSH_CERT_HOST)
    .string(o.keyId)
    .string(principals.bytes())
    .u64(secs(o.validAfter))
    .u64(secs(o.validBefore))
    .string(new Uint8Array(0)) // critical options: none defined for host certificates
    .string(new Uint8Array(0)) // extensions: none defined for host certificates
    .string(new Uint8Array(0)) // reserved
    .string(ed25519Blob(o.ca.pub))
    .bytes();
  const cert = new SshWriter().raw(body).string(signEd25519(o.ca, body)).bytes();
  return `${certType} ${Buffer.from(cert).toString("base64")} ${o.keyId}\n`;
}

/** A random positive 63-bit serial (unique enough per CA; also recorded by the server). */
export function randomSshSerial(): bigint {
  return randomBytes(8).readBigUInt64BE(0) >> 1n;
}
