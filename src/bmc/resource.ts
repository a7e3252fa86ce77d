// Reading a Redfish resource, which is untrusted input from a BMC: every property is checked for its type and
// bounded in length or count before use; a missing or mistyped property reads as absent, never as an exception from
// deep inside the media logic. Strings stay raw here; they are escaped where they are printed.

export type Json = Record<string, unknown>;

export const isObj = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/** A string property of at most `max` characters (a longer one reads as absent). */
export function strOf(o: unknown, key: string, max = 2048): string | undefined {
  const v = isObj(o) ? o[key] : undefined;
  return typeof v === "string" && v.length <= max ? v : undefined;
}

export function boolOf(o: unknown, key: string): boolean | undefined {
  const v = isObj(o) ? o[key] : undefined;
  return typeof v === "boolean" ? v : undefined;
}

export function objOf(o: unknown, key: string): Json | undefined {
  const v = isObj(o) ? o[key] : undefined;
  return isObj(v) ? v : undefined;
}

/** The strings of an array property (other items skipped), at most `maxItems` of them. */
export function strList(o: unknown, key: string, maxItems = 64, max = 256): string[] {
  const v = isObj(o) ? o[key] : undefined;
  if (!Array.isArray(v)) return [];
  return v.slice(0, maxItems).filter((s): s is string => typeof s === "string" && s.length <= max);
}

/** The @odata.id of a navigation property (`"Managers": {"@odata.id": "/redfish/v1/Managers"}`). */
export function linkOf(o: unknown, key: string): string | undefined {
  return strOf(objOf(o, key), "@odata.id");
}

/** The @odata.id of each item of an array of links (a collection's Members, Links.ManagedBy), at most `max`. */
export function linkList(o: unknown, key: string, max = 64): string[] {
  const v = isObj(o) ? o[key] : undefined;
  if (!Array.isArray(v)) return [];
  return v.slice(0, max).map((m) => strOf(m, "@odata.id")).filter((s): s is string => s !== undefined);
}

/** An action's target: `Actions["#VirtualMedia.InsertMedia"].target`, with the action object itself. */
export function actionOf(o: unknown, name: string): { target: string; info: Json } | undefined {
  const a = objOf(objOf(o, "Actions"), name);
  const target = strOf(a, "target");
  return a && target ? { target, info: a } : undefined;
}
