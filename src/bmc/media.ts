// BMC virtual media through Redfish: log in (a session, else HTTP basic auth), find the system and its CD/DVD or
// USB stick media slot, insert an image by URL (#VirtualMedia.InsertMedia, else PATCH of Image/Inserted, since BMCs
// differ), set a one-time boot override to it and power the system on or restart it; eject; report. Every loop is
// bounded in count and time.
import { escapeText } from "../util/printable.ts";
import { BmcError, Redfish, type Reply } from "./client.ts";
import { allowedValues, holdsMedia, readActionInfo, readSlot, readSystem, type ActionSpec, type MediaClass, type MediaSlot, type SystemInfo } from "./model.ts";
import { linkList, linkOf, objOf, strOf, type Json } from "./resource.ts";

export interface Credentials { user: string; password: string }

export interface BmcSession {
  rf: Redfish;
  root: Json;
  log: (line: string) => void;
  /** How long the BMC may take to show an inserted or ejected image. */
  settleMs: number;
}

const MAX_MANAGERS = 16, MAX_SLOTS = 32;
/** How long a BMC may take (by default) to show an inserted or ejected image, polled every SETTLE_POLL_MS. */
export const SETTLE_MS = 60_000;
const SETTLE_POLL_MS = 1_000;
const NOT_SUPPORTED = [404, 405, 501];

const esc = (s: string | undefined, max = 300) => (s === undefined ? "-" : escapeText(s.length > max ? `${s.slice(0, max)}...` : s));

/** The media URL the BMC fetches: an absolute http(s) URL without user info. */
export function checkMediaUrl(s: string): string {
  let u: URL;
  try { u = new URL(s); } catch { throw new BmcError("--url", `"${esc(s, 200)}" is not a URL`, 0, "give the http:// or https:// URL of an ISO the BMC can fetch"); }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new BmcError("--url", `${esc(s, 200)}: the BMC fetches the image over http:// or https://`);
  if (u.username || u.password) throw new BmcError("--url", `${esc(s, 200)}: no user or password in the URL (the BMC would show them in its media status)`);
  if (s.length > 2048 || /[\x00-\x20\x7f]/.test(s)) throw new BmcError("--url", "the URL is longer than 2048 characters or holds spaces or control characters");
  return s;
}

/** GETs the service root and logs in; `fn` runs with the session, which is deleted afterwards whatever happens. */
export async function withBmc<T>(rf: Redfish, creds: Credentials, log: (line: string) => void, fn: (s: BmcSession) => Promise<T>, settleMs = SETTLE_MS): Promise<T> {
  rf.addSecret(creds.password);
  // Ctrl-C or SIGTERM: stop at the next request and still delete the session (a BMC keeps only a few); a second one exits.
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    if (++signals > 1) process.exit(sig === "SIGINT" ? 130 : 143);
    log(`  ${sig}: stopping after logging out`);
    rf.interrupt();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    let r = await rf.call("read the service root", "GET", "/redfish/v1/");
    if (r.status === 401) { rf.useBasic(creds.user, creds.password); r = await rf.call("read the service root", "GET", "/redfish/v1/"); }
    rf.check("read the service root", "GET /redfish/v1/", r, "is --bmc a Redfish service (a BMC)?", [200]);
    if (!r.body || typeof r.body !== "object" || Array.isArray(r.body)) throw new BmcError("read the service root", "GET /redfish/v1/: the reply is not a JSON object", r.status);
    const root = r.body as Json;
    await login(rf, root, creds, log);
    try {
      return await fn({ rf, root, log, settleMs });
    } finally {
      await logout(rf, log);
    }
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await rf.close();
  }
}

async function login(rf: Redfish, root: Json, creds: Credentials, log: (line: string) => void): Promise<void> {
  const step = "log in";
  let sessions = linkOf(objOf(root, "Links"), "Sessions");
  if (!sessions && linkOf(root, "SessionService")) {
    const ss = await rf.call(step, "GET", rf.resolve(linkOf(root, "SessionService"), step));
    if (ss.status === 200) sessions = linkOf(ss.body, "Sessions");
  }
  let why = "the service root names no session collection";
  if (sessions) {
    const r = await rf.call(step, "POST", rf.resolve(sessions, step), { UserName: creds.user, Password: creds.password });
    if (r.status === 200 || r.status === 201) {
      const token = r.header("x-auth-token");
      if (!token || !/^[\x21-\x7e]{1,1024}$/.test(token)) throw new BmcError(step, `POST ${esc(sessions)}: HTTP ${r.status} without a usable X-Auth-Token`, r.status);
      // The session to DELETE at the end. A BMC may name itself by another host name than --bmc (iLO sends an
      // absolute Location): then the body's @odata.id, else the Location's path, is used on the BMC's own origin.
      let location: string | undefined;
      const loc = r.header("location"), id = strOf(r.body, "@odata.id");
      for (const l of [loc, id]) { try { location = rf.resolve(l, step); break; } catch {} }
      if (!location && loc && /^https:\/\/[^/]+\/redfish\/v1\/[\x21-\x7e]*$/.test(loc)) {
        try { location = rf.resolve(new URL(loc).pathname, step); log(`  the BMC names its session ${esc(loc, 200)}: deleted on ${rf.origin} at the end`); } catch {}
      }
      if (!location) log(`  warning: the BMC's session link ${esc(loc ?? id ?? "(none)", 200)} is not usable; the session is left to expire`);
      rf.useSession(token, location);
      log(`  logged in as ${esc(creds.user, 64)} (Redfish session)`);
      return;
    }
    if (r.status === 401 || r.status === 403) {
      throw rf.replyError(step, `POST ${sessions} as ${creds.user}`, r,
        "check --user and the password file; a BMC locks an account after a few failures, so do not retry in a loop");
    }
    if (!NOT_SUPPORTED.includes(r.status)) throw rf.replyError(step, `POST ${sessions}`, r, "");
    why = `session login answered HTTP ${r.status}`;
  }
  rf.useBasic(creds.user, creds.password);
  log(`  ${why}: HTTP basic auth as ${esc(creds.user, 64)}`);
}

async function logout(rf: Redfish, log: (line: string) => void): Promise<void> {
  const s = rf.session;
  if (!s) return;
  if (!s.location) { rf.dropAuth(); return; }
  try {
    const r = await rf.call("log out", "DELETE", s.location);
    if (r.status >= 200 && r.status < 300) log("  logged out");
    else log(`  warning: deleting the session answered HTTP ${r.status}; it expires by itself`);
  } catch (e) {
    log(`  warning: ${(e as Error).message}; the session expires by itself`);
  } finally {
    rf.dropAuth();
  }
}

const tail = (path: string) => path.split("/").filter(Boolean).pop() ?? path;

/** The computer system: `--system ID`, or the only one. */
export async function findSystem(s: BmcSession, systemId?: string): Promise<SystemInfo> {
  const step = "find the system";
  const link = linkOf(s.root, "Systems");
  if (!link) throw new BmcError(step, "the service root has no Systems collection");
  const coll = await s.rf.get(step, s.rf.resolve(link, step));
  const members = linkList(coll.body, "Members", 64).map((m) => s.rf.resolve(m, step));
  if (members.length === 0) throw new BmcError(step, `${esc(link)} lists no systems`);
  let path: string | undefined;
  if (systemId !== undefined) {
    path = members.find((m) => tail(m) === systemId);
    if (!path) throw new BmcError(step, `no system ${esc(systemId, 64)}; the BMC has ${members.slice(0, 8).map((m) => esc(tail(m), 64)).join(", ")}`);
  } else if (members.length === 1) path = members[0];
  else throw new BmcError(step, `the BMC manages ${members.length} systems (${members.slice(0, 8).map((m) => esc(tail(m), 64)).join(", ")})`, 0, "pick one with --system ID");
  const sys = await s.rf.get(step, path);
  return readSystem(path, sys.body, sys.etag);
}

/** The media slots of the system: its own VirtualMedia collection, else those of the managers that manage it. */
export async function findSlots(s: BmcSession, sys: SystemInfo): Promise<MediaSlot[]> {
  const step = "find the virtual media";
  const collections: string[] = [];
  if (sys.virtualMedia) collections.push(s.rf.resolve(sys.virtualMedia, step));
  else {
    let managers = sys.managedBy.map((m) => s.rf.resolve(m, step));
    if (managers.length === 0) {
      const link = linkOf(s.root, "Managers");
      if (!link) throw new BmcError(step, "the system has no VirtualMedia and the service root no Managers collection");
      const coll = await s.rf.get(step, s.rf.resolve(link, step));
      managers = linkList(coll.body, "Members", MAX_MANAGERS).map((m) => s.rf.resolve(m, step));
    }
    for (const m of [...new Set(managers)].slice(0, MAX_MANAGERS)) {
      const mgr = await s.rf.get(step, m);
      const vm = linkOf(mgr.body, "VirtualMedia");
      if (vm) collections.push(s.rf.resolve(vm, step));
    }
  }
  const slots: MediaSlot[] = [];
  const seen = new Set<string>();
  for (const c of [...new Set(collections)]) {
    const coll = await s.rf.get(step, c);
    for (const m of linkList(coll.body, "Members", MAX_SLOTS)) {
      const p = s.rf.resolve(m, step);
      if (seen.has(p) || slots.length >= MAX_SLOTS) continue;
      seen.add(p);
      const r = await s.rf.get(step, p);
      slots.push(readSlot(p, r.body, r.etag));
    }
  }
  return slots;
}

async function reread(s: BmcSession, slot: MediaSlot, step: string): Promise<MediaSlot> {
  const r = await s.rf.get(step, slot.path);
  return readSlot(slot.path, r.body, r.etag);
}

/** The action's parameters from its ActionInfo, if it has one the BMC answers (else undefined: not stated). */
async function actionInfo(s: BmcSession, a: ActionSpec, step: string): Promise<Map<string, string[]> | undefined> {
  if (!a.actionInfo) return undefined;
  const r = await s.rf.call(step, "GET", s.rf.resolve(a.actionInfo, step));
  return r.status === 200 ? readActionInfo(r.body) : undefined;
}

/** A PATCH, repeated once with If-Match when the BMC requires it (HTTP 428). */
async function patch(s: BmcSession, step: string, path: string, body: unknown, etag: string | undefined, reload: () => Promise<string | undefined>): Promise<Reply> {
  let r = await s.rf.call(step, "PATCH", path, body);
  if (r.status === 428 || r.status === 412) {
    const tag = (await reload()) ?? etag;
    if (tag) r = await s.rf.call(step, "PATCH", path, body, { "if-match": tag });
  }
  return r;
}

/** Polls the slot until `done` (bounded: s.settleMs, one read every SETTLE_POLL_MS). */
async function settle(s: BmcSession, slot: MediaSlot, step: string, done: (x: MediaSlot) => boolean): Promise<MediaSlot> {
  const until = Date.now() + s.settleMs;
  let cur = await reread(s, slot, step);
  for (let i = 0; !done(cur) && i < Math.ceil(s.settleMs / SETTLE_POLL_MS) && Date.now() < until; i++) {
    await Bun.sleep(Math.min(SETTLE_POLL_MS, Math.max(0, until - Date.now())));
    cur = await reread(s, slot, step);
  }
  return cur;
}

export type InsertMethod = "InsertMedia" | "PATCH";

export async function insertMedia(s: BmcSession, slot: MediaSlot, url: string): Promise<InsertMethod> {
  const step = `insert the image into ${slot.id}`;
  const hint = "check that --url is an ISO the BMC can fetch (its network, the web server's log) and that no other image is attached";
  let method: InsertMethod = "PATCH";
  if (slot.insert) {
    const a = slot.insert;
    const info = await actionInfo(s, a, step);
    const takes = (p: string) => !info || info.size === 0 || info.has(p);
    const body: Record<string, unknown> = { Image: url };
    if (takes("Inserted")) body.Inserted = true;
    if (takes("WriteProtected")) body.WriteProtected = true;
    const proto = url.startsWith("https:") ? "HTTPS" : "HTTP";
    const allowed = allowedValues(a, info, "TransferProtocolType");
    if (allowed && !allowed.includes(proto)) {
      throw new BmcError(step, `the BMC's InsertMedia takes TransferProtocolType ${allowed.map((v) => esc(v, 32)).join(", ")}, not ${proto}`, 0,
        "serve the image over a protocol the BMC takes");
    }
    if (allowed || info?.has("TransferProtocolType")) body.TransferProtocolType = proto;
    const r = await s.rf.call(step, "POST", s.rf.resolve(a.target, step), body);
    if (r.status >= 200 && r.status < 300) method = "InsertMedia";
    else if (!NOT_SUPPORTED.includes(r.status)) throw s.rf.replyError(step, `POST ${a.target}`, r, hint);
    else s.log(`  InsertMedia answered HTTP ${r.status}: setting Image by PATCH instead`);
  }
  if (method === "PATCH") {
    const r = await patch(s, step, slot.path, { Image: url, Inserted: true, WriteProtected: true }, slot.etag,
      async () => (await reread(s, slot, step)).etag);
    if (NOT_SUPPORTED.includes(r.status)) {
      throw s.rf.replyError(step, `PATCH ${slot.path}`, r, `the slot offers ${slot.insert ? "neither a working InsertMedia nor" : "no InsertMedia action and no"} PATCH of Image; try another slot with --slot`);
    }
    s.rf.check(step, `PATCH ${slot.path}`, r, hint);
  }
  const cur = await settle(s, slot, step, (x) => holdsMedia(x) && (x.image === undefined || x.image === url));
  if (!holdsMedia(cur) || (cur.image !== undefined && cur.image !== url)) {
    throw new BmcError(step, `the BMC accepted the ${method} but after ${s.settleMs / 1000} s the slot shows ${cur.image ? `image ${esc(cur.image)}` : "no image"}` +
      `${cur.inserted === undefined ? "" : `, Inserted ${cur.inserted}`}`, 0, `the BMC could not fetch the image? ${hint}`);
  }
  return method;
}

export async function ejectMedia(s: BmcSession, slot: MediaSlot): Promise<InsertMethod> {
  const step = `eject the image from ${slot.id}`;
  let method: InsertMethod = "PATCH";
  if (slot.eject) {
    const r = await s.rf.call(step, "POST", s.rf.resolve(slot.eject.target, step), {});
    if (r.status >= 200 && r.status < 300) method = "InsertMedia";
    else if (!NOT_SUPPORTED.includes(r.status)) throw s.rf.replyError(step, `POST ${slot.eject.target}`, r, "");
    else s.log(`  EjectMedia answered HTTP ${r.status}: clearing Image by PATCH instead`);
  }
  if (method === "PATCH") {
    const r = await patch(s, step, slot.path, { Image: null, Inserted: false }, slot.etag, async () => (await reread(s, slot, step)).etag);
    s.rf.check(step, `PATCH ${slot.path}`, r, "eject it in the BMC's web UI");
  }
  const cur = await settle(s, slot, step, (x) => !holdsMedia(x));
  if (holdsMedia(cur)) throw new BmcError(step, `after ${s.settleMs / 1000} s the slot still shows ${cur.image ? `image ${esc(cur.image)}` : "media inserted"}`, 0, "eject it in the BMC's web UI");
  return method === "InsertMedia" ? "InsertMedia" : "PATCH";
}

export interface SlotChoice { slot: MediaSlot; conflicts: MediaSlot[] }

/**
 * The slot to attach to: `--slot ID`, else the one already holding `url`, else the first free CD/DVD slot, else the
 * first CD/DVD slot, else the same for USB stick slots. `conflicts`: the slots of the same boot class holding another
 * image (a one-time boot to CD could boot that image instead), the chosen one included.
 */
export function chooseSlot(slots: MediaSlot[], url: string, slotId?: string): SlotChoice {
  const step = "choose the media slot";
  const usable = slots.filter((x) => x.cls);
  let slot: MediaSlot | undefined;
  if (slotId !== undefined) {
    slot = slots.find((x) => x.id === slotId || tail(x.path) === slotId);
    if (!slot) throw new BmcError(step, `no media slot ${esc(slotId, 64)}; the BMC has ${slots.map((x) => esc(x.id, 64)).join(", ") || "none"}`);
    if (!slot.cls) throw new BmcError(step, `slot ${esc(slot.id, 64)} takes ${slot.mediaTypes.map((t) => esc(t, 32)).join(", ") || "no stated media type"}, not CD, DVD or USBStick`);
  } else {
    const byClass = (c: MediaClass) => usable.filter((x) => x.cls === c);
    slot = usable.find((x) => x.image === url)
      ?? byClass("cd").find((x) => !holdsMedia(x)) ?? byClass("cd")[0]
      ?? byClass("usb").find((x) => !holdsMedia(x)) ?? byClass("usb")[0];
    if (!slot) {
      throw new BmcError(step, `no virtual media slot takes CD, DVD or USBStick media (the BMC lists ${slots.length ? slots.map((x) => `${esc(x.id, 64)} [${x.mediaTypes.map((t) => esc(t, 32)).join(",")}]`).join(", ") : "no slots"})`,
        0, "does this BMC need a license for virtual media?");
    }
  }
  const conflicts = usable.filter((x) => x.cls === slot!.cls && holdsMedia(x) && x.image !== url);
  return { slot, conflicts };
}

export const bootTargetOf = (c: MediaClass) => (c === "cd" ? "Cd" : "Usb");

export async function setBootOnce(s: BmcSession, sys: SystemInfo, cls: MediaClass): Promise<string> {
  const step = "set the one-time boot override";
  const target = bootTargetOf(cls);
  if (sys.bootTargets.length && !sys.bootTargets.includes(target)) {
    throw new BmcError(step, `the system's BootSourceOverrideTarget takes ${sys.bootTargets.slice(0, 16).map((v) => esc(v, 32)).join(", ")}, not ${target}`, 0,
      "set the boot order in the BMC's web UI and use --no-boot-override");
  }
  const r = await patch(s, step, sys.path, { Boot: { BootSourceOverrideTarget: target, BootSourceOverrideEnabled: "Once" } }, sys.etag,
    async () => (await s.rf.get(step, sys.path)).etag);
  s.rf.check(step, `PATCH ${sys.path}`, r, "set a one-time boot to virtual media in the BMC's web UI");
  return target;
}

export type PowerPolicy = "auto" | "graceful" | "none";

/** On when off; ForceRestart (or GracefulRestart with "graceful") when on; each among the allowed values. */
export async function powerOnOrRestart(s: BmcSession, sys: SystemInfo, policy: PowerPolicy): Promise<string | undefined> {
  if (policy === "none") return undefined;
  const step = "power on or restart the system";
  const st = sys.powerState;
  const off = st === "Off" || st === "PoweringOff", on = st === "On" || st === "PoweringOn";
  if (!off && !on) throw new BmcError(step, `the system's power state is ${esc(st)}`, 0, "use --power none and power it on by hand");
  if (!sys.reset) throw new BmcError(step, `${esc(sys.path)} offers no #ComputerSystem.Reset action`, 0, "use --power none and power it on by hand");
  const info = await actionInfo(s, sys.reset, step);
  const allowed = allowedValues(sys.reset, info, "ResetType");
  const prefs = off ? ["On", "ForceOn"] : policy === "graceful" ? ["GracefulRestart", "ForceRestart", "PowerCycle"] : ["ForceRestart", "GracefulRestart", "PowerCycle"];
  const type = allowed ? prefs.find((p) => allowed.includes(p)) : prefs[0];
  if (!type) throw new BmcError(step, `the system's ResetType takes ${allowed!.slice(0, 16).map((v) => esc(v, 32)).join(", ")}, none of ${prefs.join(", ")}`, 0, "use --power none and reset it by hand");
  const r = await s.rf.call(step, "POST", s.rf.resolve(sys.reset.target, step), { ResetType: type });
  s.rf.check(step, `POST ${sys.reset.target} ResetType ${type}`, r, "");
  return type;
}

export interface StatusReport {
  system: { path: string; id: string; powerState?: string; bootOverride: { target?: string; enabled?: string; mode?: string } };
  slots: { path: string; id: string; mediaTypes: string[]; inserted?: boolean; image?: string; imageName?: string; writeProtected?: boolean; connectedVia?: string; insertAction: boolean }[];
}

export function statusOf(sys: SystemInfo, slots: MediaSlot[]): StatusReport {
  return {
    system: { path: sys.path, id: sys.id, powerState: sys.powerState, bootOverride: { target: sys.bootTarget, enabled: sys.bootEnabled, mode: sys.bootMode } },
    slots: slots.map((x) => ({ path: x.path, id: x.id, mediaTypes: x.mediaTypes, inserted: x.inserted, image: x.image, imageName: x.imageName,
      writeProtected: x.writeProtected, connectedVia: x.connectedVia, insertAction: !!x.insert })),
  };
}

export function formatStatus(r: StatusReport): string[] {
  const b = r.system.bootOverride;
  const lines = [
    `  system ${esc(r.system.id, 64)} (${esc(r.system.path, 200)}): power ${esc(r.system.powerState, 32)}`,
    `  boot override: ${esc(b.target, 32)}, ${esc(b.enabled, 32)}${b.mode ? ` (${esc(b.mode, 32)})` : ""}`,
  ];
  if (r.slots.length === 0) lines.push("  no virtual media slots");
  for (const x of r.slots) {
    const held = x.inserted === undefined ? (x.image ? "inserted" : "empty") : x.inserted ? "inserted" : "empty";
    lines.push(`  slot ${esc(x.id, 64)} [${x.mediaTypes.map((t) => esc(t, 32)).join(",") || "-"}]: ${held}` +
      `${x.image ? ` ${esc(x.image, 500)}` : x.imageName ? ` ${esc(x.imageName, 200)}` : ""}` +
      `${x.connectedVia && x.connectedVia !== "NotConnected" ? ` (via ${esc(x.connectedVia, 32)})` : ""}${x.writeProtected === false ? " writable" : ""}`);
  }
  return lines;
}
