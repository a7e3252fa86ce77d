// The parts of the DMTF Redfish schemas the media commands use, read from untrusted JSON with the bounded readers of
// resource.ts: VirtualMedia (a media slot), ComputerSystem (power, boot override, Reset), ActionInfo. A property
// missing or of the wrong type reads as absent.
import { actionOf, boolOf, isObj, linkOf, linkList, objOf, strList, strOf, type Json } from "./resource.ts";

export interface ActionSpec {
  target: string;
  /** Link to the action's ActionInfo resource (its Parameters), if the BMC gives one. */
  actionInfo?: string;
  /** Inline `PARAM@Redfish.AllowableValues` lists, by parameter name. */
  allowable: Record<string, string[]>;
}

export function readAction(o: unknown, name: string): ActionSpec | undefined {
  const a = actionOf(o, name);
  if (!a) return undefined;
  const allowable: Record<string, string[]> = {};
  for (const k of Object.keys(a.info).slice(0, 32)) {
    const m = /^([A-Za-z][A-Za-z0-9]{0,63})@Redfish\.AllowableValues$/.exec(k);
    if (m) allowable[m[1]] = strList(a.info, k);
  }
  return { target: a.target, actionInfo: strOf(a.info, "@Redfish.ActionInfo"), allowable };
}

/** ActionInfo.Parameters: name → allowable values (empty: any value). */
export function readActionInfo(o: unknown): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const ps = isObj(o) ? o.Parameters : undefined;
  if (!Array.isArray(ps)) return out;
  for (const p of ps.slice(0, 64)) {
    const name = strOf(p, "Name", 64);
    if (name) out.set(name, strList(p, "AllowableValues"));
  }
  return out;
}

export type MediaClass = "cd" | "usb";

export interface MediaSlot {
  path: string;
  id: string;
  name?: string;
  mediaTypes: string[];
  /** The boot override target that boots this slot's media. */
  cls?: MediaClass;
  image?: string;
  imageName?: string;
  inserted?: boolean;
  writeProtected?: boolean;
  connectedVia?: string;
  transferProtocolType?: string;
  insert?: ActionSpec;
  eject?: ActionSpec;
  etag?: string;
}

export function classOf(mediaTypes: string[]): MediaClass | undefined {
  if (mediaTypes.includes("CD") || mediaTypes.includes("DVD")) return "cd";
  if (mediaTypes.includes("USBStick")) return "usb";
  return undefined;
}

/** A VirtualMedia resource read from `path`. */
export function readSlot(path: string, o: Json, etag?: string): MediaSlot {
  const mediaTypes = strList(o, "MediaTypes", 16, 64);
  // Image is null when the slot is empty; some BMCs send "" instead.
  const image = strOf(o, "Image", 4096) || undefined;
  return {
    path, id: strOf(o, "Id", 128) ?? path.split("/").filter(Boolean).pop() ?? path, name: strOf(o, "Name", 256),
    mediaTypes, cls: classOf(mediaTypes), image, imageName: strOf(o, "ImageName", 1024) || undefined,
    inserted: boolOf(o, "Inserted"), writeProtected: boolOf(o, "WriteProtected"), connectedVia: strOf(o, "ConnectedVia", 64),
    transferProtocolType: strOf(o, "TransferProtocolType", 64),
    insert: readAction(o, "#VirtualMedia.InsertMedia"), eject: readAction(o, "#VirtualMedia.EjectMedia"), etag,
  };
}

/** The slot holds media: Inserted, or (for BMCs that do not report it) an Image or a connection. */
export function holdsMedia(s: MediaSlot): boolean {
  if (s.inserted !== undefined) return s.inserted;
  return !!s.image || (s.connectedVia !== undefined && s.connectedVia !== "NotConnected");
}

export interface SystemInfo {
  path: string;
  id: string;
  powerState?: string;
  bootTarget?: string;
  bootEnabled?: string;
  bootMode?: string;
  /** `BootSourceOverrideTarget@Redfish.AllowableValues` (empty: not given). */
  bootTargets: string[];
  reset?: ActionSpec;
  virtualMedia?: string;
  managedBy: string[];
  etag?: string;
}

export function readSystem(path: string, o: Json, etag?: string): SystemInfo {
  const boot = objOf(o, "Boot");
  return {
    path, id: strOf(o, "Id", 128) ?? path.split("/").filter(Boolean).pop() ?? path,
    powerState: strOf(o, "PowerState", 64),
    bootTarget: strOf(boot, "BootSourceOverrideTarget", 64), bootEnabled: strOf(boot, "BootSourceOverrideEnabled", 64),
    bootMode: strOf(boot, "BootSourceOverrideMode", 64), bootTargets: strList(boot, "BootSourceOverrideTarget@Redfish.AllowableValues"),
    reset: readAction(o, "#ComputerSystem.Reset"), virtualMedia: linkOf(o, "VirtualMedia"),
    managedBy: linkList(objOf(o, "Links"), "ManagedBy", 8), etag,
  };
}

/** The values allowed for one action parameter: from the ActionInfo if read, else inline; undefined: not stated. */
export function allowedValues(a: ActionSpec, info: Map<string, string[]> | undefined, param: string): string[] | undefined {
  const v = info?.get(param);
  if (v && v.length) return v;
  const inline = a.allowable[param];
  return inline && inline.length ? inline : undefined;
}
