// Store records for nodes: identity (MACs, UUID), profile, network settings, enrollment window, issued certificates,
// SSH host certificate serials and the last reported boot stage.
import type { Database } from "bun:sqlite";
import { registerSchema } from "./db.ts";

registerSchema("nodes-v1", `
CREATE TABLE IF NOT EXISTS nodes (
  name TEXT PRIMARY KEY,
  uuid TEXT UNIQUE,
  profile TEXT NOT NULL,
  net TEXT NOT NULL,                 -- JSON NodeNetwork
  armed INTEGER NOT NULL DEFAULT 0,
  arm_expires INTEGER,               -- ms since epoch; NULL while armed = until the next enrollment
  ek_public TEXT,                    -- TPM endorsement key public part recorded at first enrollment
  created INTEGER NOT NULL,
  stage TEXT, stage_at INTEGER, stage_detail TEXT, stage_digest TEXT
);
CREATE TABLE IF NOT EXISTS node_macs (
  mac TEXT PRIMARY KEY,
  node TEXT NOT NULL REFERENCES nodes(name) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS node_certs (
  serial TEXT PRIMARY KEY,           -- upper-case hex, no leading zeros (as node:tls reports it)
  node TEXT NOT NULL REFERENCES nodes(name) ON DELETE CASCADE,
  key_id TEXT NOT NULL,
  issued INTEGER NOT NULL,
  not_after INTEGER NOT NULL,
  revoked INTEGER                    -- ms since epoch, NULL while valid
);
-- Every key ever certified, kept even when its node is removed: a CSR for a known key is a replay.
CREATE TABLE IF NOT EXISTS used_node_keys (key_id TEXT PRIMARY KEY, node TEXT NOT NULL, at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ssh_host_certs (
  serial TEXT PRIMARY KEY,
  node TEXT NOT NULL REFERENCES nodes(name) ON DELETE CASCADE,
  key_type TEXT NOT NULL,
  issued INTEGER NOT NULL,
  not_after INTEGER NOT NULL
);
`);

registerSchema("nodes-v2-challenges", `
-- TPM enrollment challenges waiting for the node's answer (one answer each; see server/enroll.ts).
CREATE TABLE IF NOT EXISTS pending_challenges (
  id TEXT PRIMARY KEY,
  node TEXT NOT NULL REFERENCES nodes(name) ON DELETE CASCADE,
  csr TEXT NOT NULL,
  ek_public TEXT NOT NULL,
  secret_sha256 TEXT NOT NULL,       -- only a hash: the secret itself is never stored
  expires INTEGER NOT NULL
);
`);

registerSchema("nodes-v3-cert-fingerprint", `
-- SHA-256 of the issued certificate's DER: a presented client certificate must be exactly the one we issued.
ALTER TABLE node_certs ADD COLUMN fingerprint TEXT;
`);

export type NodeNetwork =
  | { mode: "dhcp" }
  | { mode: "static"; ip: string; gateway?: string; dns: string[] };

export interface NodeRecord {
  name: string;
  macs: string[];
  uuid: string | null;
  profile: string;
  net: NodeNetwork;
  armed: boolean;
  armExpires: number | null;
  ekPublic: string | null;
  created: number;
  stage: string | null;
  stageAt: number | null;
  stageDetail: string | null;
  stageDigest: string | null;
}

interface Row {
  name: string; uuid: string | null; profile: string; net: string; armed: number; arm_expires: number | null;
  ek_public: string | null; created: number; stage: string | null; stage_at: number | null; stage_detail: string | null;
  stage_digest: string | null;
}

function fromRow(db: Database, r: Row): NodeRecord {
  const macs = (db.query("SELECT mac FROM node_macs WHERE node = ? ORDER BY mac").all(r.name) as { mac: string }[]).map((m) => m.mac);
  return {
    name: r.name, macs, uuid: r.uuid, profile: r.profile, net: JSON.parse(r.net) as NodeNetwork, armed: r.armed === 1,
    armExpires: r.arm_expires, ekPublic: r.ek_public, created: r.created, stage: r.stage, stageAt: r.stage_at,
    stageDetail: r.stage_detail, stageDigest: r.stage_digest,
  };
}

export class NodeStoreError extends Error {
  constructor(msg: string) { super(msg); this.name = "NodeStoreError"; }
}

export function addNode(db: Database, n: { name: string; macs: string[]; uuid?: string | null; profile: string; net: NodeNetwork }, now = Date.now()): void {
  db.transaction(() => {
    if (db.query("SELECT 1 FROM nodes WHERE name = ?").get(n.name)) throw new NodeStoreError(`node ${n.name} already exists; remove it first or pick another name`);
    if (n.uuid && db.query("SELECT 1 FROM nodes WHERE uuid = ?").get(n.uuid)) throw new NodeStoreError(`UUID ${n.uuid} already belongs to another node`);
    for (const mac of n.macs) {
      const owner = db.query("SELECT node FROM node_macs WHERE mac = ?").get(mac) as { node: string } | null;
      if (owner) throw new NodeStoreError(`MAC ${mac} already belongs to node ${owner.node}`);
    }
    db.query("INSERT INTO nodes (name, uuid, profile, net, created) VALUES (?, ?, ?, ?, ?)")
      .run(n.name, n.uuid ?? null, n.profile, JSON.stringify(n.net), now);
    for (const mac of n.macs) db.query("INSERT INTO node_macs (mac, node) VALUES (?, ?)").run(mac, n.name);
  })();
}

export function getNode(db: Database, name: string): NodeRecord | null {
  const r = db.query("SELECT * FROM nodes WHERE name = ?").get(name) as Row | null;
  return r ? fromRow(db, r) : null;
}

export function listNodes(db: Database): NodeRecord[] {
  return (db.query("SELECT * FROM nodes ORDER BY name").all() as Row[]).map((r) => fromRow(db, r));
}

export function removeNode(db: Database, name: string): boolean {
  return db.query("DELETE FROM nodes WHERE name = ?").run(name).changes === 1;
}

/** Names of nodes owning any of these MACs or this UUID (used to match enrollments and discovery queries). */
export function nodesByIdentity(db: Database, macs: string[], uuid?: string | null): string[] {
  const names = new Set<string>();
  for (const mac of macs) {
    const r = db.query("SELECT node FROM node_macs WHERE mac = ?").get(mac) as { node: string } | null;
    if (r) names.add(r.node);
  }
  if (uuid) {
    const r = db.query("SELECT name FROM nodes WHERE uuid = ?").get(uuid) as { name: string } | null;
    if (r) names.add(r.name);
  }
  return [...names].sort();
}

/** Opens a one-time enrollment window; `expires` null means until the next enrollment. */
export function armNode(db: Database, name: string, expires: number | null): boolean {
  return db.query("UPDATE nodes SET armed = 1, arm_expires = ? WHERE name = ?").run(expires, name).changes === 1;
}

/** Forgets the recorded TPM endorsement key (the node's TPM or board was replaced); the next enrollment records a new one. */
export function forgetTpm(db: Database, name: string): boolean {
  return db.query("UPDATE nodes SET ek_public = NULL WHERE name = ?").run(name).changes === 1;
}

export function disarmNode(db: Database, name: string): boolean {
  return db.query("UPDATE nodes SET armed = 0, arm_expires = NULL WHERE name = ?").run(name).changes === 1;
}

/** Revokes every valid client certificate of the node; returns how many. */
export function revokeNode(db: Database, name: string, now = Date.now()): number {
  return db.query("UPDATE node_certs SET revoked = ? WHERE node = ? AND revoked IS NULL").run(now, name).changes;
}

export function isArmed(n: NodeRecord, now = Date.now()): boolean {
  return n.armed && (n.armExpires === null || n.armExpires > now);
}

export function keyUsedBefore(db: Database, keyId: string): boolean {
  return db.query("SELECT 1 FROM used_node_keys WHERE key_id = ?").get(keyId) !== null;
}

class CommitRefused extends Error {
  constructor(readonly code: "not-armed" | "replay", msg: string) { super(msg); }
}

export interface Enrollment {
  node: string;
  serial: string;
  keyId: string;
  notAfter: number;
  fingerprint: string;
  ekPublic?: string;
}

/**
 * Records an issued certificate and closes the window, atomically: the window is claimed with a conditional UPDATE,
 * so two concurrent enrollments cannot both succeed, and a failure leaves nothing stored. Every earlier certificate of
 * the node is revoked in the same transaction: a credential taken before the re-enrollment is worthless after it.
 * Returns why it was refused, or how many earlier certificates were revoked.
 */
export function commitEnrollment(db: Database, e: Enrollment, now = Date.now()): { ok: true; revoked: number } | { ok: false; code: "not-armed" | "replay"; reason: string } {
  try {
    return db.transaction(() => {
      const claimed = db.query("UPDATE nodes SET armed = 0, arm_expires = NULL WHERE name = ? AND armed = 1 AND (arm_expires IS NULL OR arm_expires > ?)")
        .run(e.node, now).changes === 1;
      if (!claimed) throw new CommitRefused("not-armed", `the enrollment window of ${e.node} closed meanwhile (another enrollment won)`);
      if (keyUsedBefore(db, e.keyId)) throw new CommitRefused("replay", "this key was already certified once (replay)");
      db.query("INSERT INTO used_node_keys (key_id, node, at) VALUES (?, ?, ?)").run(e.keyId, e.node, now);
      const revoked = revokeNode(db, e.node, now);
      db.query("INSERT INTO node_certs (serial, node, key_id, issued, not_after, fingerprint) VALUES (?, ?, ?, ?, ?, ?)")
        .run(e.serial, e.node, e.keyId, now, e.notAfter, e.fingerprint);
      if (e.ekPublic) db.query("UPDATE nodes SET ek_public = ? WHERE name = ? AND ek_public IS NULL").run(e.ekPublic, e.node);
      return { ok: true as const, revoked };
    })();
  } catch (err) {
    if (err instanceof CommitRefused) return { ok: false, code: err.code, reason: err.message };
    throw err;
  }
}

export interface CertRecord { serial: string; node: string; issued: number; notAfter: number; revoked: number | null; fingerprint: string | null }

export function getCert(db: Database, serial: string): CertRecord | null {
  return db.query("SELECT serial, node, issued, not_after AS notAfter, revoked, fingerprint FROM node_certs WHERE serial = ?").get(serial) as CertRecord | null;
}

export function certsOf(db: Database, node: string): CertRecord[] {
  return db.query("SELECT serial, node, issued, not_after AS notAfter, revoked, fingerprint FROM node_certs WHERE node = ? ORDER BY issued").all(node) as CertRecord[];
}

export function recordSshCert(db: Database, node: string, serial: bigint, keyType: string, notAfter: number, now = Date.now()): void {
  db.query("INSERT INTO ssh_host_certs (serial, node, key_type, issued, not_after) VALUES (?, ?, ?, ?, ?)")
    .run(serial.toString(), node, keyType, now, notAfter);
}

export function sshSerialUsed(db: Database, serial: bigint): boolean {
  return db.query("SELECT 1 FROM ssh_host_certs WHERE serial = ?").get(serial.toString()) !== null;
}

export function setStage(db: Database, node: string, stage: string, detail: string | null, digest: string | null, now = Date.now()): void {
  db.query("UPDATE nodes SET stage = ?, stage_detail = ?, stage_digest = COALESCE(?, stage_digest), stage_at = ? WHERE name = ?")
    .run(stage, detail, digest, now, node);
}

/** How many nodes last reported each stage (stage null: never reported), for the server's metrics. */
export function countByStage(db: Database): { stage: string | null; n: number }[] {
  return db.query("SELECT stage, COUNT(*) AS n FROM nodes GROUP BY stage").all() as { stage: string | null; n: number }[];
}

export interface PendingChallenge { id: string; node: string; csr: string; ekPublic: string; secretSha256: string; expires: number }

export function savePendingChallenge(db: Database, c: PendingChallenge, now = Date.now()): void {
  db.transaction(() => {
    db.query("DELETE FROM pending_challenges WHERE expires <= ?").run(now); // keep the table small
    db.query("INSERT INTO pending_challenges (id, node, csr, ek_public, secret_sha256, expires) VALUES (?, ?, ?, ?, ?, ?)")
      .run(c.id, c.node, c.csr, c.ekPublic, c.secretSha256, c.expires);
  })();
}

/** Removes and returns a challenge: whoever takes it first is the only one who can answer it. */
export function takePendingChallenge(db: Database, id: string): PendingChallenge | null {
  return db.query("DELETE FROM pending_challenges WHERE id = ? RETURNING id, node, csr, ek_public AS ekPublic, secret_sha256 AS secretSha256, expires")
    .get(id) as PendingChallenge | null;
}

registerSchema("nodes-v4-report-tokens", `
-- One-boot report tokens (see server/report.ts): what the node's boot reporter proves itself with after switch_root,
-- instead of the node's client certificate. One per node; a new one replaces the earlier. Only a hash is stored.
CREATE TABLE IF NOT EXISTS report_tokens (
  node TEXT PRIMARY KEY REFERENCES nodes(name) ON DELETE CASCADE,
  token_sha256 TEXT NOT NULL,        -- hex SHA-256 of the token: the token itself is never stored
  cert_serial TEXT NOT NULL,         -- the client certificate it was issued to: revoking that kills the token too
  issued INTEGER NOT NULL,
  expires INTEGER NOT NULL
);
`);

export interface ReportToken { node: string; tokenSha256: string; certSerial: string; issued: number; expires: number }

/** Records the node's report token, replacing any earlier one of that node. */
export function saveReportToken(db: Database, t: ReportToken): void {
  db.query("INSERT OR REPLACE INTO report_tokens (node, token_sha256, cert_serial, issued, expires) VALUES (?, ?, ?, ?, ?)")
    .run(t.node, t.tokenSha256, t.certSerial, t.issued, t.expires);
}

export function getReportToken(db: Database, node: string): ReportToken | null {
  return db.query("SELECT node, token_sha256 AS tokenSha256, cert_serial AS certSerial, issued, expires FROM report_tokens WHERE node = ?")
    .get(node) as ReportToken | null;
}

/** Removes the node's report token if it is still this one (its hash); true when it was. */
export function dropReportToken(db: Database, node: string, tokenSha256: string): boolean {
  return db.query("DELETE FROM report_tokens WHERE node = ? AND token_sha256 = ?").run(node, tokenSha256).changes === 1;
}
