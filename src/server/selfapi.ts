// The mutual-TLS node API (/api/v1/self/*): who a client certificate belongs to, and the node's config,
// SSH host certificates and boot stage reports (the boot reporter's token is issued here too: see report.ts).
import type { Db } from "./store/sql.ts";
import { normaliseSerial } from "../pki/x509ca.ts";
import { parsePublicKey } from "../pki/sshkey.ts";
import { SshFormatError } from "../pki/sshwire.ts";
import { issueHostCertificate, randomSshSerial } from "../pki/sshcert.ts";
import type { Ed25519Key } from "../pki/sshkey.ts";
import { arr, obj, opt, str, type Infer } from "./schema.ts";
import { ApiError } from "./apierror.ts";
import { cleanText } from "../util/printable.ts";
import type { Audit } from "./audit.ts";
import { getCert, getNode, recordSshCert, setStage, sshSerialUsed, type NodeNetwork, type NodeRecord } from "./store/nodes.ts";
import { getProfile, getImage, recordBoot } from "./store/images.ts";
import type { SourceOrder } from "../source/order.ts";
import type { ImageSourcePlan } from "./imagesources.ts";

/** What the TLS layer learned about the client certificate (node:tls getPeerCertificate + verification). */
export interface PeerInfo {
  present: boolean;
  authorized: boolean;          // chains to the node CA and is within its validity
  authorizationError?: string;
  serial?: string;
  fingerprint?: string;         // SHA-256 of the certificate's DER, hex
}

export interface SelfDeps {
  db: Db;
  audit: Audit;
  sshCa: Ed25519Key;
  sshCaPub: string;
  imagePublicKey: string;
  rootAuthorizedKeys: string[];
  domain?: string;
  sshCertDays: number;
  /** Base URLs (https://host:port) of every server and mirror holding the images, this server first. */
  imageBaseUrls: () => string[];
  /** The same bases with the order and weights nodes use (mirror-order, mirror-weights); without it, listed as is. */
  imageSources?: () => ImageSourcePlan;
  /** Base URLs of every airroot server of the site (API). */
  apiBaseUrls: () => string[];
  /**
   * The key of an encrypted image (STATE/image-keys), undefined for a plain one. Only nodeConfig reads it: the key
   * leaves the server only in an enrolled node's mutual-TLS config.
   */
  imageKey?: (digest: string) => Buffer | undefined;
  /** How long a boot report token is good for (default REPORT_TOKEN_TTL_MS in report.ts). */
  reportTokenTtlMs?: number;
  now?: () => number;
}

/** Maps a client certificate to its node; anything but a valid, recorded, unrevoked certificate is a 401. */
export async function authenticate(d: SelfDeps, peer: PeerInfo, remote: string, path: string): Promise<NodeRecord> {
  const refuse = (reason: string, node?: string): never => {
    d.audit.record({ event: "mtls", outcome: "refused", remote, node, reason, path });
    throw new ApiError(401, "unauthenticated", `${reason}; enroll again (the node must be armed)`);
  };
  if (!peer.present || !peer.serial) refuse("no client certificate was presented");
  if (!peer.authorized) refuse(`client certificate not issued by this site's node CA or not valid now (${peer.authorizationError ?? "unverified"})`);
  const cert = await getCert(d.db, normaliseSerial(peer.serial!));
  if (!cert) refuse(`client certificate serial ${peer.serial} is unknown (node removed or state reset)`);
  if (cert!.fingerprint !== peer.fingerprint) refuse(`client certificate serial ${peer.serial} is not the certificate this server issued`, cert!.node);
  if (cert!.revoked !== null) refuse(`client certificate ${cert!.serial} was revoked`, cert!.node);
  if (cert!.notAfter <= (d.now?.() ?? Date.now())) refuse(`client certificate ${cert!.serial} expired`, cert!.node);
  const node = await getNode(d.db, cert!.node);
  if (!node) refuse(`node ${cert!.node} no longer exists`);
  return node!;
}

export interface ImageKeyGrant { cipher: "aes-xts-plain64"; key: string }

export interface NodeConfig {
  name: string;
  fqdn: string;
  network: NodeNetwork;
  profile: string;
  image: {
    digest: string; size: number | null; urls: string[]; manifestUrls: string[];
    /** How the node orders urls (missing from older servers: the node spreads), and for "spread" one weight per URL. */
    order?: SourceOrder; weights?: number[];
    /**
     * Only for an encrypted image: its dm-crypt key (128 hex digits). The cipher and sector size come from the signed
     * manifest; they are repeated here only for people reading a config. Missing from older servers (never encrypted).
     */
    encryption?: ImageKeyGrant;
  } | null;
  imagePublicKey: string;
  rootAuthorizedKeys: string[];
  sshCaPublicKey: string;
  servers: string[];
  serverTime: string;
}

const fqdnOf = (d: Pick<SelfDeps, "domain">, n: NodeRecord) => (d.domain ? `${n.name}.${d.domain}` : n.name);

export async function nodeConfig(d: SelfDeps, node: NodeRecord): Promise<NodeConfig> {
  const profile = await getProfile(d.db, node.profile);
  let image: NodeConfig["image"] = null;
  if (profile) {
    const plan = d.imageSources?.();
    const bases = plan?.bases ?? d.imageBaseUrls();
    image = {
      digest: profile.digest,
      size: (await getImage(d.db, profile.digest))?.size ?? null,
      urls: bases.map((b) => `${b}/images/${profile.digest}.sfs`),
      manifestUrls: bases.map((b) => `${b}/images/${profile.digest}.manifest`),
      ...(plan ? { order: plan.order, weights: plan.weights } : {}),
    };
    const key = d.imageKey?.(profile.digest);
    if (key) {
      image.encryption = { cipher: "aes-xts-plain64", key: key.toString("hex") };
      // Who was given which image's key: the audit trail's answer when a node is lost or an image leaks.
      d.audit.record({ event: "image-key", outcome: "ok", node: node.name, digest: profile.digest });
    }
    await recordBoot(d.db, node.name, profile.digest, d.now?.() ?? Date.now()); // gc must keep what a node is about to boot
  }
  return {
    name: node.name, fqdn: fqdnOf(d, node), network: node.net, profile: node.profile, image,
    imagePublicKey: d.imagePublicKey, rootAuthorizedKeys: d.rootAuthorizedKeys, sshCaPublicKey: d.sshCaPub,
    servers: d.apiBaseUrls(), serverTime: new Date(d.now?.() ?? Date.now()).toISOString(),
  };
}

export const sshCertRequestSchema = obj({ hostKeys: arr(str({ max: 16_384, min: 1 }), { min: 1, max: 8 }) });

/**
 * The principals of a node's SSH host certificates: only what the server recorded for it (name, FQDN, static
 * address). Never the request's source address: any node can send from another node's address, and a certificate
 * naming that address would let it pose as that node to every ssh client trusting the SSH CA.
 */
export function hostPrincipals(d: Pick<SelfDeps, "domain">, node: NodeRecord): string[] {
  return [...new Set([node.name, fqdnOf(d, node), ...(node.net.mode === "static" ? [node.net.ip.replace(/\/\d+$/, "")] : [])])];
}

/** Signs one host certificate per host public key; principals come from the node's record (hostPrincipals). */
export async function sshCertificates(d: SelfDeps, node: NodeRecord, req: Infer<typeof sshCertRequestSchema>, remote: string) {
  const keys = req.hostKeys.map((k, i) => {
    try { return parsePublicKey(k); } catch (e) {
      if (e instanceof SshFormatError) {
        d.audit.record({ event: "sshcert", outcome: "refused", remote, node: node.name, reason: `hostKeys[${i}]: ${e.message}` });
        throw new ApiError(400, "bad-host-key", `hostKeys[${i}]: ${e.message}`);
      }
      throw e;
    }
  });
  const now = d.now?.() ?? Date.now();
  const principals = hostPrincipals(d, node);
  const validAfter = new Date(now - 5 * 60_000), validBefore = new Date(now + d.sshCertDays * 86_400_000);
  const certificates: { type: string; serial: string; certificate: string }[] = [];
  for (const k of keys) {
    let serial = randomSshSerial();
    for (let i = 0; i < 4 && await sshSerialUsed(d.db, serial); i++) serial = randomSshSerial();
    const certificate = issueHostCertificate({ ca: d.sshCa, hostKey: k, principals, serial, keyId: `${node.name} ${k.type}`, validAfter, validBefore });
    await recordSshCert(d.db, node.name, serial, k.type, validBefore.getTime(), now);
    certificates.push({ type: k.type, serial: serial.toString(), certificate });
  }
  d.audit.record({ event: "sshcert", outcome: "ok", remote, node: node.name, count: certificates.length, principals: principals.join(",") });
  return { principals, validAfter: validAfter.toISOString(), validBefore: validBefore.toISOString(), certificates };
}

export const statusRequestSchema = obj({
  stage: str({ min: 1, max: 32, pattern: /^[a-z0-9][a-z0-9._-]*$/, what: "a stage name (a-z, 0-9, . _ -)" }),
  detail: opt(str({ max: 512 })),
  digest: opt(str({ max: 64, pattern: /^[0-9a-f]{64}$/, what: "a sha256 digest" })),
});

export async function reportStatus(d: SelfDeps, node: NodeRecord, req: Infer<typeof statusRequestSchema>): Promise<void> {
  const now = d.now?.() ?? Date.now();
  // Control characters (C0, C1, bidi and other format characters) would let a node forge lines in, or act on the
  // terminal of, `airroot node show`; they are stored as spaces (and escaped again at display).
  const detail = req.detail === undefined ? null : cleanText(req.detail);
  await setStage(d.db, node.name, req.stage, detail, req.digest ?? null, now);
  if (req.digest) await recordBoot(d.db, node.name, req.digest, now);
}
