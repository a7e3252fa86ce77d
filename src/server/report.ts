// One-boot report tokens: what the node's boot reporter (@airroot-report) proves itself with after switch_root.
// The reporter stays in the initramfs environment while the booted OS runs, and root there can read its memory
// (/proc/PID/mem, ptrace), so it must hold nothing worth stealing: not the node's client certificate and key, only a
// token that PID 1 asks for over mutual TLS just before switch_root (POST /api/v1/self/report-token). The token is
// good for POST /api/v1/report (server-authenticated TLS, no client certificate) with one of the stages that come
// after switch_root, for that node, until it expires or a final stage ("running", "boot-stalled") used it. A node that
// untethers (airroot.untether=) asks for a longer-lived token and reports "running" with `more`, keeping the token for
// its last stage, "untethered", which may come hours later (a large image at a capped fill rate). The
// server keeps only its SHA-256, bound to the certificate it was issued to (revoking that kills the token too).
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { normaliseSerial } from "../pki/x509ca.ts";
import { bool, nodeName, obj, opt, str, type Infer } from "./schema.ts";
import { ApiError } from "./apierror.ts";
import { reportStatus, type PeerInfo, type SelfDeps } from "./selfapi.ts";
import { dropReportToken, getCert, getNode, getReportToken, saveReportToken, type NodeRecord } from "./store/nodes.ts";

/** The stages a report token may post: what happens after switch_root, nothing else. */
export const REPORT_STAGES = ["switched-root", "running", "boot-stalled", "untethered"] as const;
/** Stages that end the boot's reporting: the token is used up ("running" with `more` does not). */
export const FINAL_REPORT_STAGES: readonly string[] = ["running", "boot-stalled", "untethered"];
/** How long a token is good for: the reporter waits at most ~11 minutes (60 s for the switch, 600 s for the OS). */
export const REPORT_TOKEN_TTL_MS = 20 * 60_000;
/** For a node that untethers: its background fill may take hours; the token can still only post stages. */
export const UNTETHER_REPORT_TOKEN_TTL_MS = 24 * 3600_000;

/** POST /api/v1/self/report-token's optional body. */
export const reportTokenRequestSchema = obj({ untether: opt(bool) });

const TOKEN_RE = /^[A-Za-z0-9_-]{43}$/; // 32 bytes, base64url without padding

export const reportRequestSchema = obj({
  node: nodeName,
  token: str({ min: 43, max: 43, pattern: TOKEN_RE, what: "a report token (43 base64url characters)" }),
  stage: str({ min: 1, max: 32, pattern: /^[a-z0-9][a-z0-9._-]*$/, what: "a stage name (a-z, 0-9, . _ -)" }),
  detail: opt(str({ max: 512 })),
  /** With "running": more stages follow ("untethered"), so the token is kept until then or its expiry. */
  more: opt(bool),
});

const sha256 = (token: string) => createHash("sha256").update(token, "utf8").digest();

/** Issues the node's report token (replacing any earlier one); `peer` is the certificate it authenticated with. */
export async function issueReportToken(d: SelfDeps, node: NodeRecord, peer: PeerInfo, remote: string,
  req: Infer<typeof reportTokenRequestSchema> = {}): Promise<{ token: string; expires: string }> {
  const now = d.now?.() ?? Date.now();
  const token = randomBytes(32).toString("base64url");
  const expires = now + (req.untether ? UNTETHER_REPORT_TOKEN_TTL_MS : (d.reportTokenTtlMs ?? REPORT_TOKEN_TTL_MS));
  await saveReportToken(d.db, { node: node.name, tokenSha256: sha256(token).toString("hex"), certSerial: normaliseSerial(peer.serial!), issued: now, expires });
  d.audit.record({ event: "report-token", outcome: "ok", remote, node: node.name, expires: new Date(expires).toISOString() });
  return { token, expires: new Date(expires).toISOString() };
}

/**
 * A stage report with a token. Every refusal says the same to the caller and the detail to the audit log only; the
 * token itself is never logged.
 */
export async function reportWithToken(d: SelfDeps, req: Infer<typeof reportRequestSchema>, remote: string): Promise<void> {
  const now = d.now?.() ?? Date.now();
  const refuse = (status: 401 | 403, reason: string): never => {
    d.audit.record({ event: "report", outcome: "refused", remote, node: req.node, stage: req.stage, reason });
    throw status === 403
      ? new ApiError(403, "stage-not-allowed", `a report token may only report ${REPORT_STAGES.join(", ")}`)
      : new ApiError(401, "bad-report-token", "the report token is not valid for this node (unknown, expired, used or replaced)");
  };
  if (!(REPORT_STAGES as readonly string[]).includes(req.stage)) refuse(403, `stage "${req.stage}" is not one a report token may post`);
  await d.db.transaction(async (db) => {
    const t = await getReportToken(db, req.node);
    if (!t) refuse(401, "the node has no report token");
    const want = Buffer.from(t!.tokenSha256, "hex");
    const got = sha256(req.token);
    if (want.length !== got.length || !timingSafeEqual(want, got)) refuse(401, "the report token does not match the node's");
    if (t!.expires <= now) refuse(401, `the report token expired at ${new Date(t!.expires).toISOString()}`);
    const cert = await getCert(db, t!.certSerial);
    if (!cert || cert.node !== req.node || cert.revoked !== null) refuse(401, `the client certificate ${t!.certSerial} the token was issued to is revoked or gone`);
    const node = await getNode(db, req.node);
    if (!node) refuse(401, "the node no longer exists");
    // The drop is the claim: of two final reports with one token (through two servers), only one removes it.
    if (FINAL_REPORT_STAGES.includes(req.stage) && !(req.more && req.stage === "running") &&
      !(await dropReportToken(db, req.node, t!.tokenSha256))) refuse(401, "the report token was used meanwhile");
    // Recorded like /self/status (text sanitised the same way); no digest: the token cannot touch what gc keeps.
    await reportStatus({ ...d, db }, node!, { stage: req.stage, ...(req.detail !== undefined ? { detail: req.detail } : {}) });
  });
}
