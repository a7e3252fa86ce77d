// `airroot node add|list|show|arm|disarm|revoke|remove`: thin commands over the node store; `node media` (BMC virtual
// media) is in nodemedia.ts.
import { defineCommand } from "citty";
import { hostname } from "node:os";
import { resolve } from "node:path";
import { openDatabase, type Db } from "../server/store/db.ts";
import { dbAudit } from "../server/store/auditlog.ts";
import { addNode, armNode, certsByNode, certsOf, disarmNode, forgetTpm, getNode, isArmed, listNodes, removeNode, revokeNode, type NodeRecord } from "../server/store/nodes.ts";
import { parseNodeSpec } from "../server/nodespec.ts";
import { fileAudit, teeAudit, type Audit } from "../server/audit.ts";
import { statePaths } from "../server/state.ts";
import { parseDuration, formatDuration } from "../util/duration.ts";
import { repeated, stateArg } from "./args.ts";
import { escapeText, safeJson } from "../util/printable.ts";

const nameArg = { type: "positional", description: "node name", required: true } as const;


/** Runs f on the state dir's database; what f audits goes to audit.log and to the database (every server sees it). */
async function withDb<T>(state: string, f: (db: Db, audit: Audit) => Promise<T>): Promise<T> {
  const dir = resolve(state);
  const db = await openDatabase(dir);
  const audit = teeAudit(fileAudit(statePaths(dir).audit), dbAudit(db, `cli@${hostname()}`));
  try { return await f(db, audit); } finally { await audit.flush(); await db.close(); }
}

async function mustGet(db: Db, name: string): Promise<NodeRecord> {
  const n = await getNode(db, name);
  if (!n) throw new Error(`no node named ${name}; see \`airroot node list\``);
  return n;
}

function armState(n: NodeRecord, now = Date.now()): string {
  if (!n.armed) return "-";
  if (!isArmed(n, now)) return "expired";
  return n.armExpires === null ? "once" : `${formatDuration(n.armExpires - now)} left`;
}

function stageOf(n: NodeRecord, now = Date.now()): string {
  if (!n.stage) return "-";
  // A failed boot names its step ("failed: root"); the reason is in `node show`.
  const step = n.stage === "failed" ? /^([a-z0-9_-]{1,32}):/.exec(n.stageDetail ?? "")?.[1] : undefined;
  return `${n.stage}${step ? `: ${step}` : ""} (${formatDuration(now - (n.stageAt ?? now))} ago)`;
}

const add = defineCommand({
  meta: { name: "add", description: "Register a node: its MACs/UUID identify it at enrollment; the profile picks its image." },
  args: {
    name: nameArg, state: stateArg,
    mac: { type: "string", description: "MAC address of a NIC (repeatable or comma-separated)" },
    uuid: { type: "string", description: "SMBIOS system UUID (from dmidecode -s system-uuid)" },
    profile: { type: "string", description: "profile whose image the node boots", required: true },
    ip: { type: "string", description: "static address with prefix, e.g. 10.1.2.3/24 (default: DHCP)" },
    gateway: { type: "string", description: "default gateway for --ip" },
    dns: { type: "string", description: "DNS server for --ip (repeatable or comma-separated)" },
    dhcp: { type: "boolean", description: "configure the network by DHCP (the default without --ip)" },
  },
  async run({ args, rawArgs }) {
    const spec = parseNodeSpec({ name: args.name, macs: repeated(rawArgs, "mac"), uuid: args.uuid, profile: args.profile,
      ip: args.ip, gateway: args.gateway, dns: repeated(rawArgs, "dns"), dhcp: args.dhcp });
    await withDb(args.state, async (db, audit) => {
      await addNode(db, spec);
      audit.record({ event: "node.add", outcome: "ok", node: spec.name });
    });
    console.log(`added ${spec.name} (${spec.macs.join(", ") || spec.uuid}); arm it with \`airroot node arm ${spec.name}\` before it enrolls`);
  },
});

const list = defineCommand({
  meta: { name: "list", description: "List nodes with their profile, enrollment window and last reported boot stage." },
  args: { state: stateArg, json: { type: "boolean", description: "machine-readable output" } },
  async run({ args }) {
    const nodes = await withDb(args.state, async (db) => {
      const certs = await certsByNode(db);
      return (await listNodes(db)).map((n) => ({ ...n, certs: certs.get(n.name) ?? [] }));
    });
    if (args.json) { console.log(safeJson(nodes, 2)); return; }
    if (nodes.length === 0) { console.log("no nodes; add one with `airroot node add NAME --mac MAC --profile P`"); return; }
    const rows = nodes.map((n) => [n.name, n.profile, n.net.mode === "static" ? n.net.ip : "dhcp", armState(n),
      n.certs.some((c) => c.revoked === null) ? "enrolled" : n.certs.length ? "revoked" : "-", stageOf(n)].map(escapeText));
    const head = ["NAME", "PROFILE", "ADDRESS", "ARMED", "CERT", "LAST STAGE"];
    const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    for (const r of [head, ...rows]) console.log(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]))).join("  "));
  },
});

const show = defineCommand({
  meta: { name: "show", description: "Show one node: identity, network, enrollment, certificates and last stage." },
  args: { name: nameArg, state: stateArg, json: { type: "boolean", description: "machine-readable output" } },
  async run({ args }) {
    const { n, certs } = await withDb(args.state, async (db) => { const n = await mustGet(db, args.name); return { n, certs: await certsOf(db, n.name) }; });
    if (args.json) { console.log(safeJson({ ...n, certs }, 2)); return; }
    const t = (ms: number | null) => (ms === null ? "-" : new Date(ms).toISOString());
    console.log([
      `name:      ${n.name}`, `macs:      ${n.macs.join(", ") || "-"}`, `uuid:      ${n.uuid ?? "-"}`, `profile:   ${n.profile}`,
      `network:   ${n.net.mode === "static" ? `${n.net.ip} gw ${n.net.gateway ?? "-"} dns ${n.net.dns.join(",") || "-"}` : "dhcp"}`,
      `armed:     ${armState(n)}`, `tpm ek:    ${n.ekPublic ? "recorded" : "-"}`,
      `stage:     ${stageOf(n)}${n.stageDetail ? `: ${n.stageDetail}` : ""}${n.stageDigest ? ` [image ${n.stageDigest.slice(0, 12)}]` : ""}`,
      `certs:`, ...certs.map((c) => `  ${c.serial}  issued ${t(c.issued)}  expires ${t(c.notAfter)}  ${c.revoked ? `REVOKED ${t(c.revoked)}` : "valid"}`),
    ].map(escapeText).join("\n")); // the stage detail comes from the node: never raw control characters
  },
});

const arm = defineCommand({
  meta: { name: "arm", description: "Open a one-time enrollment window: the next valid enrollment closes it." },
  args: {
    name: nameArg, state: stateArg,
    once: { type: "boolean", description: "no time limit: open until the next enrollment (the default without --for)" },
    for: { type: "string", description: "close the window after this long even if unused, e.g. 30m, 2h" },
    "new-tpm": { type: "boolean", description: "the node's TPM (or board) was replaced: forget the recorded endorsement key so the new TPM may enroll" },
  },
  async run({ args }) {
    if (args.once && args.for) throw new Error("node arm: use either --once (no time limit) or --for DURATION");
    const expires = args.for ? Date.now() + parseDuration(args.for, "--for") : null;
    await withDb(args.state, async (db, audit) => {
      await mustGet(db, args.name);
      if (args["new-tpm"]) await forgetTpm(db, args.name);
      await armNode(db, args.name, expires);
      if (args["new-tpm"]) audit.record({ event: "node.forget-tpm", outcome: "ok", node: args.name });
      audit.record({ event: "node.arm", outcome: "ok", node: args.name, expires: expires ?? undefined });
    });
    console.log(`${args.name} armed ${expires ? `until ${new Date(expires).toISOString()}` : "until its next enrollment"}`);
  },
});

const disarm = defineCommand({
  meta: { name: "disarm", description: "Close the node's enrollment window." },
  args: { name: nameArg, state: stateArg },
  async run({ args }) {
    await withDb(args.state, async (db, audit) => {
      await mustGet(db, args.name);
      await disarmNode(db, args.name);
      audit.record({ event: "node.disarm", outcome: "ok", node: args.name });
    });
    console.log(`${args.name} disarmed`);
  },
});

const revoke = defineCommand({
  meta: { name: "revoke", description: "Revoke the node's client certificates: its API calls get 401 until it enrolls again." },
  args: { name: nameArg, state: stateArg },
  async run({ args }) {
    const n = await withDb(args.state, async (db, audit) => {
      await mustGet(db, args.name);
      const n = await revokeNode(db, args.name);
      audit.record({ event: "node.revoke", outcome: "ok", node: args.name, certificates: n });
      return n;
    });
    console.log(`${args.name}: revoked ${n} certificate(s)`);
  },
});

const remove = defineCommand({
  meta: { name: "remove", description: "Delete the node and its certificates (its keys stay on the replay list)." },
  args: { name: nameArg, state: stateArg },
  async run({ args }) {
    await withDb(args.state, async (db, audit) => {
      await mustGet(db, args.name);
      await removeNode(db, args.name);
      audit.record({ event: "node.remove", outcome: "ok", node: args.name });
    });
    console.log(`${args.name} removed`);
  },
});

export const nodeCommand = defineCommand({
  meta: { name: "node", description: "Manage nodes: add, list, show, arm, disarm, revoke, remove; media (BMC virtual media through Redfish)" },
  subCommands: { add, list, show, arm, disarm, revoke, remove, media: () => import("./nodemedia").then((m) => m.nodeMediaCommand) },
});
