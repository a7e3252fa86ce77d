// `airroot node media attach|detach|status NODE --bmc https://BMC`: a node's boot media through its BMC's Redfish
// virtual media (thin: the logic is in src/bmc).
import { defineCommand } from "citty";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { BmcError, DEFAULT_TIMEOUT_MS, FINGERPRINT_HOWTO, Redfish, formatFingerprint, parseBmcUrl, parseFingerprint, type BmcTrust } from "../bmc/client.ts";
import {
  checkMediaUrl, chooseSlot, ejectMedia, findSlots, findSystem, formatStatus, insertMedia, powerOnOrRestart, setBootOnce, statusOf,
  withBmc, bootTargetOf, SETTLE_MS, type Credentials, type PowerPolicy,
} from "../bmc/media.ts";
import { holdsMedia } from "../bmc/model.ts";
import { escapeText, safeJson } from "../util/printable.ts";

export const PASSWORD_ENV = "AIRROOT_BMC_PASSWORD";
export const USER_ENV = "AIRROOT_BMC_USER";

const common = {
  name: { type: "positional", description: "node name (looked up in the node database with --state, to print it; not required there)", required: true },
  bmc: { type: "string", description: "the node's BMC: https://ADDRESS[:PORT] (Redfish; XCC, iDRAC, iLO, OpenBMC)", required: true },
  user: { type: "string", description: `BMC account (default: $${USER_ENV})` },
  "password-file": { type: "string", description: `file holding the BMC password (one line); else $${PASSWORD_ENV}. Never on the command line` },
  "bmc-ca": { type: "string", description: "PEM of the CA that issued the BMC's certificate, or the self-signed certificate itself (chain and host name checked)" },
  "bmc-fingerprint": { type: "string", description: "pin the BMC's certificate: sha256:AB:CD:... as `openssl x509 -noout -fingerprint -sha256` prints it; one of --bmc-ca or this is required" },
  system: { type: "string", description: "Redfish system Id when the BMC manages more than one" },
  timeout: { type: "string", description: `deadline of each request to the BMC, in seconds (default ${DEFAULT_TIMEOUT_MS / 1000})` },
  wait: { type: "string", description: `how long the BMC may take to show an inserted or ejected image, in seconds (default ${SETTLE_MS / 1000})` },
  state: { type: "string", description: "server state directory: print the node's record if it has one (optional)" },
} as const;

function readTrust(args: { "bmc-ca"?: string; "bmc-fingerprint"?: string }): BmcTrust {
  const t: BmcTrust = {};
  if (args["bmc-ca"]) {
    let pem: string;
    try { pem = readFileSync(args["bmc-ca"], "utf8"); } catch (e) { throw new BmcError("--bmc-ca", `${args["bmc-ca"]}: ${(e as Error).message}`); }
    if (!pem.includes("-----BEGIN CERTIFICATE-----")) throw new BmcError("--bmc-ca", `${args["bmc-ca"]} holds no PEM certificate`);
    t.caPem = pem;
  }
  if (args["bmc-fingerprint"]) t.fingerprint = parseFingerprint(args["bmc-fingerprint"]);
  return t;
}

function readCredentials(args: { user?: string; "password-file"?: string }, log: (l: string) => void): Credentials {
  const user = args.user ?? process.env[USER_ENV];
  if (!user) throw new BmcError("BMC login", `no BMC account: give --user NAME (or $${USER_ENV})`);
  let password: string | undefined;
  const file = args["password-file"];
  if (file) {
    let st;
    try { st = statSync(file); } catch (e) { throw new BmcError("--password-file", `${file}: ${(e as Error).message}`); }
    if (!st.isFile() || st.size > 4096) throw new BmcError("--password-file", `${file} is not a file of at most 4096 bytes`);
    if (st.mode & 0o077) log(`  warning: ${file} is readable by others (chmod 600 it)`);
    password = readFileSync(file, "utf8").replace(/\r?\n$/, "");
  } else password = process.env[PASSWORD_ENV];
  if (!password) throw new BmcError("BMC login", `no BMC password: give --password-file FILE (one line) or set $${PASSWORD_ENV}; it is never taken from the command line`);
  return { user, password };
}

function secondsOf(s: string | undefined, name: string, dflt: number): number {
  if (s === undefined) return dflt;
  if (!/^\d{1,4}(\.\d{1,3})?$/.test(s) || Number(s) <= 0 || Number(s) > 600) throw new BmcError(name, `"${escapeText(s.slice(0, 40))}" is not a number of seconds (0 < s <= 600)`);
  return Math.round(Number(s) * 1000);
}

/** One line about the node from the server's database, if --state has one and the node is in it. */
async function nodeLine(name: string, state: string | undefined): Promise<string | undefined> {
  if (!state) return undefined;
  const { hasDatabase, openDatabase } = await import("../server/store/db.ts");
  if (!hasDatabase(resolve(state))) return `  node ${escapeText(name)}: no node database in ${escapeText(state)}`;
  const { getNode } = await import("../server/store/nodes.ts");
  const db = await openDatabase(resolve(state));
  try {
    const n = await getNode(db, name);
    if (!n) return `  node ${escapeText(name)}: not in the node database`;
    return escapeText(`  node ${n.name}: profile ${n.profile}, ${n.macs.join(", ") || n.uuid || "-"}, ${n.net.mode === "static" ? n.net.ip : "dhcp"}` +
      `${n.stage ? `, last stage ${n.stage}` : ""}`);
  } finally { await db.close(); }
}

async function open(args: Record<string, unknown>, log: (l: string) => void) {
  const a = args as { name: string; bmc: string; user?: string; "password-file"?: string; "bmc-ca"?: string; "bmc-fingerprint"?: string; timeout?: string; wait?: string; state?: string };
  const bmc = parseBmcUrl(a.bmc).origin;
  const trust = readTrust(a);
  const timeoutMs = secondsOf(a.timeout, "--timeout", DEFAULT_TIMEOUT_MS);
  const settleMs = secondsOf(a.wait, "--wait", SETTLE_MS);
  const rf = new Redfish(bmc, { trust, timeoutMs }); // refuses without --bmc-ca or --bmc-fingerprint
  let creds: Credentials;
  try { creds = readCredentials(a, log); } catch (e) { await rf.close(); throw e; }
  log(`${escapeText(a.name)}: BMC ${bmc} (${trust.fingerprint ? `certificate pinned ${formatFingerprint(trust.fingerprint)}` : `certificate checked against ${escapeText(a["bmc-ca"]!)}`})`);
  const line = await nodeLine(a.name, a.state);
  if (line) log(line);
  return { rf, creds, settleMs };
}

const log = (l: string) => console.log(l);

const attach = defineCommand({
  meta: {
    name: "attach",
    description: "Insert a boot image into the node's BMC virtual CD/DVD (or USB stick), set a one-time boot to it and power the node on (or restart it).",
  },
  args: {
    ...common,
    url: {
      type: "string", required: true,
      description: "the image the BMC fetches: an ISO reachable by the BMC over HTTP(S), e.g. one built by `airroot media iso` and put on a web server the BMC's network reaches",
    },
    slot: { type: "string", description: "media slot Id (default: the first CD/DVD slot, else a USB stick slot)" },
    force: { type: "boolean", description: "eject another image that a slot of the same kind holds (without it, attach refuses: a boot to CD could boot that image)" },
    power: { type: "string", description: "auto: On when off, ForceRestart when on (default); graceful: GracefulRestart when on; none: leave the power as it is" },
    "boot-override": { type: "boolean", default: true, description: "set the one-time boot override to the media (the default)", negativeDescription: "leave the boot override as it is" },
  },
  async run({ args }) {
    const url = checkMediaUrl(args.url);
    const power = (args.power ?? "auto") as PowerPolicy;
    if (!["auto", "graceful", "none"].includes(power)) throw new BmcError("--power", `"${escapeText(String(args.power).slice(0, 40))}": give auto, graceful or none`);
    const { rf, creds, settleMs } = await open(args, log);
    await withBmc(rf, creds, log, async (s) => {
      const sys = await findSystem(s, args.system);
      const slots = await findSlots(s, sys);
      const { slot, conflicts } = chooseSlot(slots, url, args.slot);
      log(`  media slot ${escapeText(slot.id)} [${slot.mediaTypes.map(escapeText).join(",")}] (${escapeText(slot.path)})`);
      if (conflicts.length && !args.force) {
        const c = conflicts[0];
        throw new BmcError("attach", `slot ${escapeText(c.id)} already holds ${c.image ? escapeText(c.image.slice(0, 300)) : "another image"}; ` +
          `a one-time boot to ${bootTargetOf(slot.cls!)} could boot it instead of ${escapeText(url)}`, 0,
          `eject it with \`airroot node media detach ${escapeText(args.name)} --bmc ${rf.origin} --slot ${escapeText(c.id)} ...\`, or attach with --force to eject it first`);
      }
      for (const c of conflicts) {
        const how = await ejectMedia(s, c);
        log(`  ejected ${c.image ? escapeText(c.image.slice(0, 300)) : "the image"} from ${escapeText(c.id)} (--force; ${how === "InsertMedia" ? "EjectMedia" : "PATCH"})`);
      }
      if (slot.image === url && holdsMedia(slot)) log(`  ${escapeText(url)} already inserted`);
      else log(`  inserted ${escapeText(url)} (${await insertMedia(s, slot, url)})`);
      if (args["boot-override"]) log(`  boot override: ${await setBootOnce(s, sys, slot.cls!)} once`);
      const reset = await powerOnOrRestart(s, sys, power);
      log(reset ? `  power ${escapeText(sys.powerState ?? "-")}: ${reset}` : `  power ${escapeText(sys.powerState ?? "-")}: left as it is (--power none)`);
    }, settleMs);
  },
});

const detach = defineCommand({
  meta: { name: "detach", description: "Eject the image from the node's BMC virtual CD/DVD and USB stick slots (and cancel a pending one-time boot to them)." },
  args: {
    ...common,
    slot: { type: "string", description: "eject only this media slot Id" },
    url: { type: "string", description: "eject only the slot holding this image URL" },
  },
  async run({ args }) {
    const { rf, creds, settleMs } = await open(args, log);
    await withBmc(rf, creds, log, async (s) => {
      const sys = await findSystem(s, args.system);
      const slots = await findSlots(s, sys);
      if (args.slot && !slots.some((x) => x.id === args.slot)) {
        throw new BmcError("detach", `no media slot ${escapeText(args.slot)}; the BMC has ${slots.map((x) => escapeText(x.id)).join(", ") || "none"}`);
      }
      const held = slots.filter((x) => x.cls && (args.slot ? x.id === args.slot : true) && (args.url ? x.image === args.url : true)
        && holdsMedia(x));
      if (held.length === 0) log("  no image inserted: nothing to eject");
      for (const x of held) {
        const how = await ejectMedia(s, x);
        log(`  ejected ${x.image ? escapeText(x.image.slice(0, 300)) : "the image"} from ${escapeText(x.id)} (${how === "InsertMedia" ? "EjectMedia" : "PATCH"})`);
      }
      const classes = new Set<string>(held.map((x) => bootTargetOf(x.cls!)));
      if (sys.bootEnabled === "Once" && sys.bootTarget && classes.has(sys.bootTarget)) {
        const r = await s.rf.call("cancel the one-time boot override", "PATCH", sys.path, { Boot: { BootSourceOverrideEnabled: "Disabled" } });
        s.rf.check("cancel the one-time boot override", `PATCH ${sys.path}`, r, "cancel it in the BMC's web UI");
        log(`  one-time boot to ${escapeText(sys.bootTarget)} cancelled`);
      }
    }, settleMs);
  },
});

const status = defineCommand({
  meta: { name: "status", description: "Show the node's BMC virtual media slots, the inserted image, the boot override and the power state." },
  args: { ...common, json: { type: "boolean", description: "machine-readable output" } },
  async run({ args }) {
    const quiet = args.json ? () => {} : log;
    const { rf, creds, settleMs } = await open(args, quiet);
    await withBmc(rf, creds, quiet, async (s) => {
      const sys = await findSystem(s, args.system);
      const report = statusOf(sys, await findSlots(s, sys));
      if (args.json) console.log(safeJson(report, 2));
      else for (const l of formatStatus(report)) log(l);
    }, settleMs);
  },
});

export const nodeMediaCommand = defineCommand({
  meta: {
    name: "media",
    description: "A node's boot media through its BMC (Redfish virtual media): attach, detach, status. The BMC's certificate is " +
      `verified with --bmc-ca or pinned with --bmc-fingerprint (read it with \`${FINGERPRINT_HOWTO("BMC:443")}\`)`,
  },
  subCommands: { attach, detach, status },
});
