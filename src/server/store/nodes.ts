// Store records for nodes: identity (MACs, UUID), profile, network settings, enrollment window, issued certificates,
// SSH host certificate serials and the last reported boot stage.
import { bigints, registerSchema } from "./migrations.ts";
import { isUniqueViolation, num, numOrNull, type Db } from "./sql.ts";

const NODES_V1 = `
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
`;
registerSchema("nodes-v1", NODES_V1, bigints(NODES_V1));

const NODES_V2_CHALLENGES = `
-- TPM enrollment challenges waiting for the node's answer (one answer each; see server/enroll.ts).
CREATE TABLE IF NOT EXISTS pending_challenges (
  id TEXT PRIMARY KEY,
  node TEXT NOT NULL REFERENCES nodes(name) ON DELETE CASCADE,
  csr TEXT NOT NULL,
  ek_public TEXT NOT NULL,
  secret_sha256 TEXT NOT NULL,       -- only a hash: the secret itself is never stored
  expires INTEGER NOT NULL
);
`;
registerSchema("nodes-v2-challenges", NODES_V2_CHALLENGES, bigints(NODES_V2_CHALLENGES));

const NODES_V3_CERT_FINGERPRINT = `
-- SHA-256 of the issued certificate's DER: a presented client certificate must be exactly the one we issued.
ALTER TABLE node_certs ADD COLUMN fingerprint TEXT;
`;
registerSchema("nodes-v3-cert-fingerprint", NODES_V3_CERT_FINGERPRINT, bigints(NODES_V3_CERT_FINGERPRINT));

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
  name: string; uuid: string | null; profile: string; net: string; armed: number | string; arm_expires: number | string | null;
  ek_public: string | null; created: number | string; stage: string | null; stage_at: number | string | null; stage_detail: string | null;
  stage_digest: string | null;
}

async function fromRow(db: Db, r: Row): Promise<NodeRecord> {
  const macs = (await db.all<{ mac: string }>("SELECT mac FROM node_macs WHERE node = ? ORDER BY mac", r.name)).map((m) => m.mac);
  return withMacs(r, macs);
}

function withMacs(r: Row, macs: string[]): NodeRecord {
  return {
    name: r.name, macs, uuid: r.uuid, profile: r.profile, net: JSON.parse(r.net) as NodeNetwork, armed: num(r.armed) === 1,
    armExpires: numOrNull(r.arm_expires), ekPublic: r.ek_public, created: num(r.created), stage: r.stage, stageAt: numOrNull(r.stage_at),
    stageDetail: r.stage_detail, stageDigest: r.stage_digest,
  };
}

export class NodeStoreError extends Error {
  constructor(msg: string) { super(msg); this.name = "NodeStoreError"; }
}

export async function addNode(db: Db, n: { name: string; macs: string[]; uuid?: string | null; profile: string; net: NodeNetwork }, now = Date.now()): Promise<void> {
  try {
    await db.transaction(async (tx) => {
      if (await tx.get("SELECT 1 AS x FROM nodes WHERE name = ?", n.name)) throw new NodeStoreError(`node ${n.name} already exists; remove it first or pick another name`);
      if (n.uuid && await tx.get("SELECT 1 AS x FROM nodes WHERE uuid = ?", n.uuid)) throw new NodeStoreError(`UUID ${n.uuid} already belongs to another node`);
      for (const mac of n.macs) {
        const owner = await tx.get<{ node: string }>("SELECT node FROM node_macs WHERE mac = ?", mac);
        if (owner) throw new NodeStoreError(`MAC ${mac} already belongs to node ${owner.node}`);
      }
      await tx.run("INSERT INTO nodes (name, uuid, profile, net, created) VALUES (?, ?, ?, ?, ?)", n.name, n.uuid ?? null, n.profile, JSON.stringify(n.net), now);
      for (const mac of n.macs) await tx.run("INSERT INTO node_macs (mac, node) VALUES (?, ?)", mac, n.name);
    });
  } catch (e) {
    // Another server (or admin) added the same name, UUID or MAC between our checks and our insert.
    if (isUniqueViolation(e)) throw new NodeStoreError(`node ${n.name}, its UUID or one of its MACs was just added by someone else; see \`airroot node list\``);
    throw e;
  }
}

export async function getNode(db: Db, name: string): Promise<NodeRecord | null> {
  const r = await db.get<Row>("SELECT * FROM nodes WHERE name = ?", name);
  return r ? await fromRow(db, r) : null;
}

export async function listNodes(db: Db): Promise<NodeRecord[]> {
  // Two queries, not one per node: on PostgreSQL each is a round trip.
  const rows = await db.all<Row>("SELECT * FROM nodes ORDER BY name");
  const macs = new Map<string, string[]>();
  for (const m of await db.all<{ mac: string; node: string }>("SELECT mac, node FROM node_macs ORDER BY mac")) {
    macs.set(m.node, [...(macs.get(m.node) ?? []), m.mac]);
  }
  return rows.map((r) => withMacs(r, macs.get(r.name) ?? []));
}

export async function removeNode(db: Db, name: string): Promise<boolean> {
  return (await db.run("DELETE FROM nodes WHERE name = ?", name)).changes === 1;
}

/** Names of nodes owning any of these MACs or this UUID (used to match enrollments and discovery queries). */
export async function nodesByIdentity(db: Db, macs: string[], uuid?: string | null): Promise<string[]> {
  const names = new Set<string>();
  for (const mac of macs) {
    const r = await db.get<{ node: string }>("SELECT node FROM node_macs WHERE mac = ?", mac);
    if (r) names.add(r.node);
  }
  if (uuid) {
    const r = await db.get<{ name: string }>("SELECT name FROM nodes WHERE uuid = ?", uuid);
    if (r) names.add(r.name);
  }
  return [...names].sort();
}

/** Opens a one-time enrollment window; `expires` null means until the next enrollment. */
export async function armNode(db: Db, name: string, expires: number | null): Promise<boolean> {
  return (await db.run("UPDATE nodes SET armed = 1, arm_expires = ? WHERE name = ?", expires, name)).changes === 1;
}

/** Forgets the recorded TPM endorsement key (the node's TPM or board was replaced); the next enrollment records a new one. */
export async function forgetTpm(db: Db, name: string): Promise<boolean> {
  return (await db.run("UPDATE nodes SET ek_public = NULL WHERE name = ?", name)).changes === 1;
}

export async function disarmNode(db: Db, name: string): Promise<boolean> {
  return (await db.run("UPDATE nodes SET armed = 0, arm_expires = NULL WHERE name = ?", name)).changes === 1;
}

/** Revokes every valid client certificate of the node; returns how many. */
export async function revokeNode(db: Db, name: string, now = Date.now()): Promise<number> {
  return (await db.run("UPDATE node_certs SET revoked = ? WHERE node = ? AND revoked IS NULL", now, name)).changes;
}

export function isArmed(n: NodeRecord, now = Date.now()): boolean {
  return n.armed && (n.armExpires === null || n.armExpires > now);
}

export async function keyUsedBefore(db: Db, keyId: string): Promise<boolean> {
  return (await db.get("SELECT 1 AS x FROM used_node_keys WHERE key_id = ?", keyId)) !== null;
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

const REPLAY = "this key was already certified once (replay)";

/**
 * Records an issued certificate and closes the window, atomically: the window is claimed with a conditional UPDATE,
 * so two concurrent enrollments cannot both succeed (on PostgreSQL the second waits for the first's row lock, then
 * finds the window closed), and a failure leaves nothing stored. The key goes into used_node_keys under its primary
 * key: the same CSR committed twice at once, through any servers, fails the second time. Every earlier certificate of
 * the node is revoked in the same transaction: a credential taken before the re-enrollment is worthless after it.
 * Returns why it was refused, or how many earlier certificates were revoked.
 */
export async function commitEnrollment(db: Db, e: Enrollment, now = Date.now()): Promise<{ ok: true; revoked: number } | { ok: false; code: "not-armed" | "replay"; reason: string }> {
  try {
    return await db.transaction(async (tx) => {
      const claimed = (await tx.run("UPDATE nodes SET armed = 0, arm_expires = NULL WHERE name = ? AND armed = 1 AND (arm_expires IS NULL OR arm_expires > ?)",
        e.node, now)).changes === 1;
      if (!claimed) throw new CommitRefused("not-armed", `the enrollment window of ${e.node} closed meanwhile (another enrollment won)`);
      if (await keyUsedBefore(tx, e.keyId)) throw new CommitRefused("replay", REPLAY);
      await tx.run("INSERT INTO used_node_keys (key_id, node, at) VALUES (?, ?, ?)", e.keyId, e.node, now);
      const revoked = await revokeNode(tx, e.node, now);
      await tx.run("INSERT INTO node_certs (serial, node, key_id, issued, not_after, fingerprint) VALUES (?, ?, ?, ?, ?, ?)",
        e.serial, e.node, e.keyId, now, e.notAfter, e.fingerprint);
      if (e.ekPublic) await tx.run("UPDATE nodes SET ek_public = ? WHERE name = ? AND ek_public IS NULL", e.ekPublic, e.node);
      return { ok: true as const, revoked };
    });
  } catch (err) {
    if (err instanceof CommitRefused) return { ok: false, code: err.code, reason: err.message };
    if (isUniqueViolation(err) && /used_node_keys/.test((err as Error).message)) return { ok: false, code: "replay", reason: REPLAY };
    throw err;
  }
}

export interface CertRecord { serial: string; node: string; issued: number; notAfter: number; revoked: number | null; fingerprint: string | null }

type CertRow = { serial: string; node: string; issued: unknown; notAfter: unknown; revoked: unknown; fingerprint: string | null };
const certOf = (r: CertRow): CertRecord => ({ ...r, issued: num(r.issued), notAfter: num(r.notAfter), revoked: numOrNull(r.revoked) });
// Quoted: PostgreSQL folds unquoted aliases to lower case.
const CERT_COLUMNS = `serial, node, issued, not_after AS "notAfter", revoked, fingerprint`;

export async function getCert(db: Db, serial: string): Promise<CertRecord | null> {
  const r = await db.get<CertRow>(`SELECT ${CERT_COLUMNS} FROM node_certs WHERE serial = ?`, serial);
  return r ? certOf(r) : null;
}

export async function certsOf(db: Db, node: string): Promise<CertRecord[]> {
  return (await db.all<CertRow>(`SELECT ${CERT_COLUMNS} FROM node_certs WHERE node = ? ORDER BY issued`, node)).map(certOf);
}

/** Every node's certificates in one query (`node list`: one round trip, not one per node). */
export async function certsByNode(db: Db): Promise<Map<string, CertRecord[]>> {
  const out = new Map<string, CertRecord[]>();
  for (const r of await db.all<CertRow>(`SELECT ${CERT_COLUMNS} FROM node_certs ORDER BY issued`)) {
    out.set(r.node, [...(out.get(r.node) ?? []), certOf(r)]);
  }
  return out;
}

export async function recordSshCert(db: Db, node: string, serial: bigint, keyType: string, notAfter: number, now = Date.now()): Promise<void> {
  await db.run("INSERT INTO ssh_host_certs (serial, node, key_type, issued, not_after) VALUES (?, ?, ?, ?, ?)", serial.toString(), node, keyType, now, notAfter);
}

export async function sshSerialUsed(db: Db, serial: bigint): Promise<boolean> {
  return (await db.get("SELECT 1 AS x FROM ssh_host_certs WHERE serial = ?", serial.toString())) !== null;
}

export async function setStage(db: Db, node: string, stage: string, detail: string | null, digest: string | null, now = Date.now()): Promise<void> {
  await db.run("UPDATE nodes SET stage = ?, stage_detail = ?, stage_digest = COALESCE(?, stage_digest), stage_at = ? WHERE name = ?",
    stage, detail, digest, now, node);
}

/** How many nodes last reported each stage (stage null: never reported), for the server's metrics. */
export async function countByStage(db: Db): Promise<{ stage: string | null; n: number }[]> {
  return (await db.all<{ stage: string | null; n: unknown }>("SELECT stage, COUNT(*) AS n FROM nodes GROUP BY stage"))
    .map((r) => ({ stage: r.stage, n: num(r.n) }));
}

export interface PendingChallenge { id: string; node: string; csr: string; ekPublic: string; secretSha256: string; expires: number }

export async function savePendingChallenge(db: Db, c: PendingChallenge, now = Date.now()): Promise<void> {
  await db.transaction(async (tx) => {
    await tx.run("DELETE FROM pending_challenges WHERE expires <= ?", now); // keep the table small
    await tx.run("INSERT INTO pending_challenges (id, node, csr, ek_public, secret_sha256, expires) VALUES (?, ?, ?, ?, ?, ?)",
      c.id, c.node, c.csr, c.ekPublic, c.secretSha256, c.expires);
  });
}

/** Removes and returns a challenge: whoever takes it first (on any server) is the only one who can answer it. */
export async function takePendingChallenge(db: Db, id: string): Promise<PendingChallenge | null> {
  const r = await db.get<PendingChallenge>(`DELETE FROM pending_challenges WHERE id = ? RETURNING id, node, csr, ek_public AS "ekPublic", secret_sha256 AS "secretSha256", expires`, id);
  return r ? { ...r, expires: num(r.expires) } : null;
}

const NODES_V4_REPORT_TOKENS = `
-- One-boot report tokens (see server/report.ts): what the node's boot reporter proves itself with after switch_root,
-- instead of the node's client certificate. One per node; a new one replaces the earlier. Only a hash is stored.
CREATE TABLE IF NOT EXISTS report_tokens (
  node TEXT PRIMARY KEY REFERENCES nodes(name) ON DELETE CASCADE,
  token_sha256 TEXT NOT NULL,        -- hex SHA-256 of the token: the token itself is never stored
  cert_serial TEXT NOT NULL,         -- the client certificate it was issued to: revoking that kills the token too
  issued INTEGER NOT NULL,
  expires INTEGER NOT NULL
);
`;
registerSchema("nodes-v4-report-tokens", NODES_V4_REPORT_TOKENS, bigints(NODES_V4_REPORT_TOKENS));


export interface ReportToken { node: string; tokenSha256: string; certSerial: string; issued: number; expires: number }

/** Records the node's report token, replacing any earlier one of that node. */
export async function saveReportToken(db: Db, t: ReportToken): Promise<void> {
  await db.run("INSERT INTO report_tokens (node, token_sha256, cert_serial, issued, expires) VALUES (?, ?, ?, ?, ?) " +
    "ON CONFLICT (node) DO UPDATE SET token_sha256 = excluded.token_sha256, cert_serial = excluded.cert_serial, issued = excluded.issued, expires = excluded.expires",
    t.node, t.tokenSha256, t.certSerial, t.issued, t.expires);
}

export async function getReportToken(db: Db, node: string): Promise<ReportToken | null> {
  const r = await db.get<ReportToken>(`SELECT node, token_sha256 AS "tokenSha256", cert_serial AS "certSerial", issued, expires FROM report_tokens WHERE node = ?`, node);
  return r ? { ...r, issued: num(r.issued), expires: num(r.expires) } : null;
}

/** Removes the node's report token if it is still this one (its hash); true when it was. */
export async function dropReportToken(db: Db, node: string, tokenSha256: string): Promise<boolean> {
  return (await db.run("DELETE FROM report_tokens WHERE node = ? AND token_sha256 = ?", node, tokenSha256)).changes === 1;
}
