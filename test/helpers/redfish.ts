// A small Redfish service on loopback for the BMC virtual media tests. No real BMC exists here: this server follows
// the DMTF Redfish schemas (DSP8010) for the resources the media commands use: ServiceRoot (v1_15), SessionService
// and Session (POST to create, X-Auth-Token, Location, DELETE), ManagerCollection and Manager, VirtualMediaCollection and
// VirtualMedia (v1_6: MediaTypes, Image, ImageName, Inserted, WriteProtected, ConnectedVia, TransferProtocolType,
// Actions #VirtualMedia.InsertMedia and #VirtualMedia.EjectMedia, optionally with an ActionInfo), ComputerSystemCollection
// and ComputerSystem (v1_20: PowerState, Boot with BootSourceOverrideTarget@Redfish.AllowableValues, Actions
// #ComputerSystem.Reset with ResetType@Redfish.AllowableValues, Links.ManagedBy), and Redfish error replies
// (error.code, error.message, error.@Message.ExtendedInfo[] with MessageId, Message, Resolution, as DSP0266 §9.6 says).
// Options select what real BMCs differ in (sessions or basic auth only, InsertMedia or only PATCH, media under the
// Manager or under the System, an ActionInfo); `hook` lets a test answer any request itself (hostile replies).
import https from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { X509Certificate, createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { makeTestPki, type TestPki } from "./pki";

export interface SlotSpec { id: string; types: string[]; image?: string }

export interface RedfishOptions {
  user?: string;
  password?: string;
  /** SessionService with a Sessions collection (default true); false: basic auth only, session POST answers 405. */
  sessions?: boolean;
  /** InsertMedia/EjectMedia: "ok" (default), an error status the action answers (405, 404), or "absent" (no Actions). */
  actions?: "ok" | 405 | 404 | "absent";
  /** PATCH of Image/Inserted on VirtualMedia (default true; false: 405, as OpenBMC). */
  patch?: boolean;
  /** InsertMedia carries an @Redfish.ActionInfo listing its Parameters (and refuses others). */
  actionInfo?: boolean;
  /** TransferProtocolType@Redfish.AllowableValues inline on InsertMedia. */
  transferProtocols?: string[];
  /** VirtualMedia under the ComputerSystem (iDRAC 6+, newer bmcweb) instead of under the Manager. */
  mediaOnSystem?: boolean;
  power?: "On" | "Off";
  resetTypes?: string[];
  bootTargets?: string[];
  slots?: SlotSpec[];
  /** PATCH without If-Match answers 428 Precondition Required (DSP0266 §8.5.6), with a stale one 412. */
  requireIfMatch?: boolean;
  /** InsertMedia answers 202 Accepted and shows the image only this long afterwards (an asynchronous BMC). */
  insertDelayMs?: number;
  /** Number of systems (default 1). */
  systems?: number;
  /** Answers a request itself when it returns true (after the request body was read). */
  hook?: (req: IncomingMessage, res: ServerResponse, path: string, body: unknown) => boolean;
  pki?: TestPki;
}

export interface LoggedRequest { method: string; path: string; body: unknown; auth: "session" | "basic" | "none" | "bad" }

export interface RedfishServer {
  url: string;
  /** PEM of the CA that issued the server's certificate. */
  caPem: string;
  caFile: string;
  /** SHA-256 of the server certificate, openssl's form (AB:CD:...). */
  fingerprint: string;
  log: LoggedRequest[];
  slots: Map<string, Record<string, unknown>>;
  system: { PowerState: string; Boot: Record<string, unknown>; resets: string[] };
  sessions: Map<string, string>;
  close(): Promise<void>;
}

export const REDFISH_USER = "admin", REDFISH_PASSWORD = "s3cret-Pa55";

const V1 = "/redfish/v1";

export function redfishError(res: ServerResponse, status: number, id: string, message: string, resolution = "None."): void {
  send(res, status, { error: { code: `Base.1.16.${id}`, message: "A general error has occurred. See ExtendedInfo for more information.",
    "@Message.ExtendedInfo": [{ "@odata.type": "#Message.v1_1_1.Message", MessageId: `Base.1.16.${id}`, Message: message, Severity: "Critical", MessageSeverity: "Critical", Resolution: resolution }] } });
}

function send(res: ServerResponse, status: number, body?: unknown, headers: Record<string, string> = {}): void {
  const text = body === undefined ? "" : JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json;charset=utf-8", "odata-version": "4.0", "content-length": String(Buffer.byteLength(text)), ...headers });
  res.end(text);
}

export async function startRedfish(dir: string, o: RedfishOptions = {}): Promise<RedfishServer> {
  const pki = o.pki ?? makeTestPki(join(dir, "redfish-pki"));
  const certPem = readFileSync(pki.serverCert, "utf8");
  const user = o.user ?? REDFISH_USER, password = o.password ?? REDFISH_PASSWORD;
  const sessionsOn = o.sessions ?? true, actions = o.actions ?? "ok", patchOn = o.patch ?? true;
  const resetTypes = o.resetTypes ?? ["On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart", "PowerCycle", "Nmi"];
  const bootTargets = o.bootTargets ?? ["None", "Pxe", "Cd", "Usb", "Hdd", "BiosSetup", "UefiHttp"];
  const specs = o.slots ?? [{ id: "CD1", types: ["CD", "DVD"] }, { id: "USB1", types: ["USBStick"] }];
  const nsys = o.systems ?? 1;
  const slots = new Map<string, Record<string, unknown>>();
  for (const s of specs) {
    slots.set(s.id, { Image: s.image ?? null, ImageName: s.image ? s.image.split("/").pop() : null, Inserted: !!s.image, WriteProtected: true,
      ConnectedVia: s.image ? "URI" : "NotConnected", TransferProtocolType: s.image ? "HTTP" : null, MediaTypes: s.types });
  }
  const system = { PowerState: o.power ?? "Off", Boot: { BootSourceOverrideEnabled: "Disabled", BootSourceOverrideTarget: "None", BootSourceOverrideMode: "UEFI" } as Record<string, unknown>, resets: [] as string[] };
  const sessions = new Map<string, string>();
  let sessionNo = 0;
  const log: LoggedRequest[] = [];
  const mediaBase = o.mediaOnSystem ? `${V1}/Systems/1/VirtualMedia` : `${V1}/Managers/bmc/VirtualMedia`;
  const insertParams = ["Image", "Inserted", "WriteProtected", "TransferProtocolType", "UserName", "Password"];

  const authOf = (req: IncomingMessage): LoggedRequest["auth"] => {
    const tok = req.headers["x-auth-token"];
    if (typeof tok === "string") return sessions.has(tok) ? "session" : "bad";
    const b = req.headers.authorization;
    if (typeof b === "string") return b === `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}` ? "basic" : "bad";
    return "none";
  };

  const vmEtag = (slot: Record<string, unknown>) => `"vm-${createHash("sha256").update(String(slot.Image)).digest("hex").slice(0, 16)}"`;
  const sysEtag = () => `"sys-${createHash("sha256").update(JSON.stringify(system.Boot)).digest("hex").slice(0, 16)}"`;
  /** False (and the reply sent) when the PATCH lacks a matching If-Match the server requires. */
  const ifMatch = (req: IncomingMessage, res: ServerResponse, tag: string): boolean => {
    if (!o.requireIfMatch) return true;
    const h = req.headers["if-match"];
    if (h === undefined) { redfishError(res, 428, "PreconditionRequired", "A precondition header or annotation is required to change the resource."); return false; }
    if (h !== tag) { redfishError(res, 412, "PreconditionFailed", "The ETag supplied did not match the ETag required to change this resource."); return false; }
    return true;
  };
  const slotResource = (id: string) => {
    const s = slots.get(id)!;
    const insert: Record<string, unknown> = { target: `${mediaBase}/${id}/Actions/VirtualMedia.InsertMedia` };
    if (o.actionInfo) insert["@Redfish.ActionInfo"] = `${mediaBase}/${id}/InsertMediaActionInfo`;
    if (o.transferProtocols) insert["TransferProtocolType@Redfish.AllowableValues"] = o.transferProtocols;
    return {
      "@odata.type": "#VirtualMedia.v1_6_0.VirtualMedia", "@odata.id": `${mediaBase}/${id}`, Id: id, Name: `Virtual ${id}`, ...s,
      ...(actions === "absent" ? {} : { Actions: { "#VirtualMedia.InsertMedia": insert, "#VirtualMedia.EjectMedia": { target: `${mediaBase}/${id}/Actions/VirtualMedia.EjectMedia` } } }),
    };
  };
  const systemResource = (n: number) => ({
    "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "@odata.id": `${V1}/Systems/${n}`, Id: String(n), Name: "Compute node", SystemType: "Physical",
    PowerState: system.PowerState,
    Boot: { ...system.Boot, "BootSourceOverrideTarget@Redfish.AllowableValues": bootTargets },
    Actions: { "#ComputerSystem.Reset": { target: `${V1}/Systems/${n}/Actions/ComputerSystem.Reset`, "ResetType@Redfish.AllowableValues": resetTypes } },
    ...(o.mediaOnSystem ? { VirtualMedia: { "@odata.id": mediaBase } } : {}),
    Links: { ManagedBy: [{ "@odata.id": `${V1}/Managers/bmc` }] },
  });
  const collection = (type: string, id: string, members: string[]) => ({
    "@odata.type": `#${type}.${type}`, "@odata.id": id, Name: type, "Members@odata.count": members.length, Members: members.map((m) => ({ "@odata.id": m })),
  });

  function route(req: IncomingMessage, res: ServerResponse, path: string, body: unknown): void {
    const m = req.method ?? "GET";
    const auth = authOf(req);
    if (m === "GET" && (path === V1 || path === `${V1}/`)) {
      send(res, 200, {
        "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot", "@odata.id": `${V1}/`, Id: "RootService", Name: "Root Service", RedfishVersion: "1.15.0",
        UUID: "92384634-2938-2342-8820-489239905423",
        Systems: { "@odata.id": `${V1}/Systems` }, Managers: { "@odata.id": `${V1}/Managers` },
        ...(sessionsOn ? { SessionService: { "@odata.id": `${V1}/SessionService` }, Links: { Sessions: { "@odata.id": `${V1}/SessionService/Sessions` } } } : {}),
      });
      return;
    }
    if (path === `${V1}/SessionService/Sessions` && m === "POST") {
      if (!sessionsOn) { redfishError(res, 405, "OperationNotAllowed", "The HTTP method is not allowed on this resource."); return; }
      const b = body as { UserName?: unknown; Password?: unknown } | undefined;
      if (typeof b?.UserName !== "string" || typeof b?.Password !== "string") { redfishError(res, 400, "PropertyMissing", "The property UserName is a required property and must be included in the request."); return; }
      if (b.UserName !== user || b.Password !== password) {
        redfishError(res, 401, "ResourceAtUriUnauthorized", `While accessing the resource at ${V1}/SessionService/Sessions, the service received an authorization error: invalid user name or password.`,
          "Ensure that the appropriate access is provided for the service in order for it to access the URI.");
        return;
      }
      const token = randomBytes(16).toString("hex"), id = String(++sessionNo);
      sessions.set(token, id);
      send(res, 201, { "@odata.type": "#Session.v1_7_0.Session", "@odata.id": `${V1}/SessionService/Sessions/${id}`, Id: id, Name: "User Session", UserName: user },
        { "x-auth-token": token, location: `${V1}/SessionService/Sessions/${id}` });
      return;
    }
    if (auth !== "session" && auth !== "basic") {
      redfishError(res, 401, "NoValidSession", "There is no valid session established with the implementation.", "Establish a session before attempting any operations.");
      return;
    }
    if (m === "GET" && path === `${V1}/SessionService`) {
      if (!sessionsOn) { redfishError(res, 404, "ResourceMissingAtURI", `The resource at the URI ${path} was not found.`); return; }
      send(res, 200, { "@odata.type": "#SessionService.v1_1_8.SessionService", "@odata.id": path, Id: "SessionService", ServiceEnabled: true, SessionTimeout: 1800, Sessions: { "@odata.id": `${path}/Sessions` } });
      return;
    }
    const sess = /^\/redfish\/v1\/SessionService\/Sessions\/(\d+)$/.exec(path);
    if (sess && m === "DELETE") {
      for (const [t, id] of sessions) if (id === sess[1]) { sessions.delete(t); send(res, 204); return; }
      redfishError(res, 404, "ResourceMissingAtURI", `The resource at the URI ${path} was not found.`);
      return;
    }
    if (m === "GET" && path === `${V1}/Managers`) { send(res, 200, collection("ManagerCollection", path, [`${V1}/Managers/bmc`])); return; }
    if (m === "GET" && path === `${V1}/Managers/bmc`) {
      send(res, 200, { "@odata.type": "#Manager.v1_19_0.Manager", "@odata.id": path, Id: "bmc", Name: "Manager", ManagerType: "BMC",
        ...(o.mediaOnSystem ? {} : { VirtualMedia: { "@odata.id": mediaBase } }), Links: { ManagerForServers: [{ "@odata.id": `${V1}/Systems/1` }] } });
      return;
    }
    if (m === "GET" && path === `${V1}/Systems`) { send(res, 200, collection("ComputerSystemCollection", path, Array.from({ length: nsys }, (_, i) => `${V1}/Systems/${i + 1}`))); return; }
    const sysm = /^\/redfish\/v1\/Systems\/(\d+)$/.exec(path);
    if (sysm && Number(sysm[1]) >= 1 && Number(sysm[1]) <= nsys) {
      if (m === "GET") { send(res, 200, systemResource(Number(sysm[1])), { etag: sysEtag() }); return; }
      if (m === "PATCH") {
        if (!ifMatch(req, res, sysEtag())) return;
        const boot = (body as { Boot?: Record<string, unknown> } | undefined)?.Boot;
        if (!boot || typeof boot !== "object") { redfishError(res, 400, "PropertyUnknown", "The property in the request body is not known or not patchable."); return; }
        if (boot.BootSourceOverrideTarget !== undefined && !bootTargets.includes(boot.BootSourceOverrideTarget as string)) {
          redfishError(res, 400, "PropertyValueNotInList", `The value '${boot.BootSourceOverrideTarget}' for the property BootSourceOverrideTarget is not in the list of acceptable values.`);
          return;
        }
        if (boot.BootSourceOverrideEnabled !== undefined && !["Disabled", "Once", "Continuous"].includes(boot.BootSourceOverrideEnabled as string)) {
          redfishError(res, 400, "PropertyValueNotInList", `The value for the property BootSourceOverrideEnabled is not in the list of acceptable values.`);
          return;
        }
        Object.assign(system.Boot, boot);
        send(res, 204);
        return;
      }
    }
    if (m === "POST" && path === `${V1}/Systems/1/Actions/ComputerSystem.Reset`) {
      const t = (body as { ResetType?: unknown } | undefined)?.ResetType;
      if (typeof t !== "string" || !resetTypes.includes(t)) { redfishError(res, 400, "ActionParameterNotSupported", `The parameter ResetType for the action ComputerSystem.Reset is not supported on the target resource.`); return; }
      if (t === "On" && system.PowerState === "On") { redfishError(res, 409, "OperationNotAllowed", "The system is already powered on."); return; }
      if (/Restart|PowerCycle/.test(t) && system.PowerState === "Off") { redfishError(res, 409, "OperationNotAllowed", "The system is powered off."); return; }
      system.resets.push(t);
      system.PowerState = /Off|Shutdown/.test(t) ? "Off" : "On";
      send(res, 204);
      return;
    }
    if (m === "GET" && path === mediaBase) { send(res, 200, collection("VirtualMediaCollection", path, [...slots.keys()].map((id) => `${mediaBase}/${id}`))); return; }
    const vm = path.startsWith(`${mediaBase}/`) ? path.slice(mediaBase.length + 1).split("/") : undefined;
    const slot = vm && slots.get(vm[0]);
    if (vm && slot) {
      const id = vm[0];
      if (vm.length === 1 && m === "GET") { send(res, 200, slotResource(id), { etag: vmEtag(slot) }); return; }
      if (vm.length === 2 && vm[1] === "InsertMediaActionInfo" && m === "GET" && o.actionInfo) {
        send(res, 200, { "@odata.type": "#ActionInfo.v1_3_0.ActionInfo", "@odata.id": path, Id: "InsertMediaActionInfo", Name: "Insert Media Action Info",
          Parameters: [{ Name: "Image", Required: true, DataType: "String" }, { Name: "Inserted", DataType: "Boolean" }, { Name: "WriteProtected", DataType: "Boolean" },
            { Name: "TransferProtocolType", DataType: "String", AllowableValues: o.transferProtocols ?? ["HTTP", "HTTPS", "NFS", "CIFS"] }] });
        return;
      }
      if (vm.length === 1 && m === "PATCH") {
        if (!patchOn) { redfishError(res, 405, "OperationNotAllowed", "The HTTP method is not allowed on this resource."); return; }
        if (!ifMatch(req, res, vmEtag(slot))) return;
        const b = body as Record<string, unknown>;
        for (const k of Object.keys(b ?? {})) if (!["Image", "Inserted", "WriteProtected"].includes(k)) { redfishError(res, 400, "PropertyNotWritable", `The property ${k} is a read only property and cannot be assigned a value.`); return; }
        if (b.Image !== undefined && b.Image !== null && typeof b.Image !== "string") { redfishError(res, 400, "PropertyValueTypeError", "The value for the property Image is of a different type than the property can accept."); return; }
        if (typeof b.Image === "string" && slot.Inserted && slot.Image !== b.Image) { redfishError(res, 409, "ResourceInUse", "The change to the requested resource failed because the resource is in use or in transition."); return; }
        if (b.Image !== undefined) { slot.Image = b.Image; slot.ImageName = typeof b.Image === "string" ? b.Image.split("/").pop() : null; }
        if (typeof b.Inserted === "boolean") slot.Inserted = b.Inserted;
        if (typeof b.WriteProtected === "boolean") slot.WriteProtected = b.WriteProtected;
        slot.ConnectedVia = slot.Inserted ? "URI" : "NotConnected";
        if (!slot.Inserted) { slot.Image = null; slot.ImageName = null; }
        send(res, 204);
        return;
      }
      if (vm.length === 3 && vm[1] === "Actions" && m === "POST" && actions !== "absent") {
        if (actions !== "ok") { redfishError(res, actions, actions === 405 ? "OperationNotAllowed" : "ResourceMissingAtURI", actions === 405 ? "The HTTP method is not allowed on this resource." : `The resource at the URI ${path} was not found.`); return; }
        const b = (body ?? {}) as Record<string, unknown>;
        if (vm[2] === "VirtualMedia.InsertMedia") {
          if (typeof b.Image !== "string") { redfishError(res, 400, "ActionParameterMissing", "The action VirtualMedia.InsertMedia requires the parameter Image to be present in the request body."); return; }
          for (const k of Object.keys(b)) if (!insertParams.includes(k) || (o.actionInfo && k === "UserName")) { redfishError(res, 400, "ActionParameterUnknown", `The action VirtualMedia.InsertMedia was submitted with the invalid parameter ${k}.`); return; }
          if (b.TransferProtocolType !== undefined && o.transferProtocols && !o.transferProtocols.includes(b.TransferProtocolType as string)) {
            redfishError(res, 400, "ActionParameterValueNotInList", `The value '${b.TransferProtocolType}' for the parameter TransferProtocolType in the action VirtualMedia.InsertMedia is not in the list of acceptable values.`);
            return;
          }
          if (slot.Inserted) { redfishError(res, 409, "ResourceInUse", "The change to the requested resource failed because the resource is in use or in transition.", "Eject the media and resubmit the request."); return; }
          const apply = () => Object.assign(slot, { Image: b.Image, ImageName: (b.Image as string).split("/").pop(), Inserted: b.Inserted ?? true, WriteProtected: b.WriteProtected ?? true,
            ConnectedVia: "URI", TransferProtocolType: b.TransferProtocolType ?? ((b.Image as string).startsWith("https:") ? "HTTPS" : "HTTP") });
          if (o.insertDelayMs) { setTimeout(apply, o.insertDelayMs); send(res, 202, { "@odata.id": "/redfish/v1/TaskService/Tasks/1", Id: "1", TaskState: "Running" }, { location: "/redfish/v1/TaskService/Tasks/1/Monitor" }); return; }
          apply();
          send(res, 204);
          return;
        }
        if (vm[2] === "VirtualMedia.EjectMedia") {
          Object.assign(slot, { Image: null, ImageName: null, Inserted: false, ConnectedVia: "NotConnected", TransferProtocolType: null });
          send(res, 204);
          return;
        }
      }
    }
    redfishError(res, 404, "ResourceMissingAtURI", `The resource at the URI ${path} was not found.`);
  }

  const sockets = new Set<Socket>();
  const srv = https.createServer({ cert: certPem, key: readFileSync(pki.serverKey) }, (req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => { size += c.length; if (size <= 65536) chunks.push(c); });
    req.on("end", () => {
      const path = new URL(req.url ?? "/", "https://x").pathname;
      let body: unknown;
      const text = Buffer.concat(chunks).toString("utf8");
      try { body = text ? JSON.parse(text) : undefined; } catch { body = text; }
      log.push({ method: req.method ?? "GET", path, body, auth: authOf(req) });
      if (o.hook?.(req, res, path, body)) return;
      route(req, res, path, body);
    });
  });
  srv.on("connection", (s: Socket) => { sockets.add(s); s.on("close", () => sockets.delete(s)); });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as { port: number }).port;
  return {
    url: `https://127.0.0.1:${port}`, caPem: readFileSync(pki.caCert, "utf8"), caFile: pki.caCert,
    fingerprint: new X509Certificate(certPem).fingerprint256, log, slots, system, sessions,
    close: async () => { for (const s of sockets) s.destroy(); await new Promise<void>((r) => srv.close(() => r())); },
  };
}

/** Runs a binary without blocking this process (the Redfish server runs here), killed after `killMs`. */
export async function runBinary(bin: string, args: string[], env: Record<string, string> = {}, killMs = 60_000): Promise<{ code: number; out: string; err: string; ms: number }> {
  const t0 = performance.now();
  const p = Bun.spawn([bin, ...args], { stdout: "pipe", stderr: "pipe", env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env } });
  const timer = setTimeout(() => p.kill("SIGKILL"), killMs);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  return { code, out, err, ms: performance.now() - t0 };
}
