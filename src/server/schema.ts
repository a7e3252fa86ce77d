// Strict validators for untrusted JSON (API bodies, config files): exact types, bounded sizes, unknown fields rejected.

export class SchemaError extends Error {
  constructor(readonly path: string, msg: string) { super(`${path || "body"}: ${msg}`); this.name = "SchemaError"; }
}

export type Validator<T> = (v: unknown, path: string) => T;
export type Infer<V> = V extends Validator<infer T> ? T : never;

export function str(o: { max?: number; min?: number; pattern?: RegExp; what?: string } = {}): Validator<string> {
  const max = o.max ?? 256, min = o.min ?? 0;
  return (v, path) => {
    if (typeof v !== "string") throw new SchemaError(path, "must be a string");
    if (v.length > max) throw new SchemaError(path, `longer than ${max} characters`);
    if (v.length < min) throw new SchemaError(path, min === 1 ? "must not be empty" : `shorter than ${min} characters`);
    if (o.pattern && !o.pattern.test(v)) throw new SchemaError(path, `is not ${o.what ?? `of the form ${o.pattern}`}`);
    return v;
  };
}

export function int(o: { min?: number; max?: number } = {}): Validator<number> {
  const min = o.min ?? 0, max = o.max ?? Number.MAX_SAFE_INTEGER;
  return (v, path) => {
    if (typeof v !== "number" || !Number.isSafeInteger(v)) throw new SchemaError(path, "must be an integer");
    if (v < min || v > max) throw new SchemaError(path, `must be between ${min} and ${max}`);
    return v;
  };
}

export const bool: Validator<boolean> = (v, path) => {
  if (typeof v !== "boolean") throw new SchemaError(path, "must be true or false");
  return v;
};

export function oneOf<const T extends string>(values: readonly T[]): Validator<T> {
  return (v, path) => {
    if (typeof v !== "string" || !(values as readonly string[]).includes(v)) throw new SchemaError(path, `must be one of ${values.join(", ")}`);
    return v as T;
  };
}

export function arr<T>(item: Validator<T>, o: { max?: number; min?: number } = {}): Validator<T[]> {
  const max = o.max ?? 64, min = o.min ?? 0;
  return (v, path) => {
    if (!Array.isArray(v)) throw new SchemaError(path, "must be an array");
    if (v.length > max) throw new SchemaError(path, `has more than ${max} entries`);
    if (v.length < min) throw new SchemaError(path, `needs at least ${min} entr${min === 1 ? "y" : "ies"}`);
    return v.map((x, i) => item(x, `${path}[${i}]`));
  };
}

const OPTIONAL = Symbol("optional");
export type Optional<T> = Validator<T | undefined> & { [OPTIONAL]: true };

export function opt<T>(v: Validator<T>): Optional<T> {
  const f = ((x: unknown, path: string) => (x === undefined ? undefined : v(x, path))) as Optional<T>;
  f[OPTIONAL] = true;
  return f;
}

const DEFAULTED = Symbol("defaulted");

/** A field that may be missing (e.g. added to a file format later): then it takes a copy of `value`. */
export function withDefault<T>(v: Validator<T>, value: T): Validator<T> {
  const f = ((x: unknown, path: string) => (x === undefined ? structuredClone(value) : v(x, path))) as Validator<T> & { [DEFAULTED]: true };
  f[DEFAULTED] = true;
  return f;
}

type Shape = Record<string, Validator<unknown>>;
type ObjOf<S extends Shape> =
  { [K in keyof S as S[K] extends Optional<any> ? never : K]: Infer<S[K]> } &
  { [K in keyof S as S[K] extends Optional<any> ? K : never]?: Exclude<Infer<S[K]>, undefined> };

/** An object with exactly these fields (optional ones may be missing); any other field is an error. */
export function obj<S extends Shape>(shape: S): Validator<ObjOf<S>> {
  return (v, path) => {
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new SchemaError(path, "must be an object");
    for (const k of Object.keys(v)) {
      if (Object.hasOwn(shape, k)) continue;
      // The name comes from the sender: shorten and quote it if odd, so errors and audit lines stay readable.
      const shown = /^[A-Za-z0-9_]{1,64}$/.test(k) ? k : JSON.stringify(k.slice(0, 64));
      throw new SchemaError(path ? `${path}.${shown}` : shown, "unknown field");
    }
    const out: Record<string, unknown> = {};
    for (const [k, f] of Object.entries(shape)) {
      const here = path ? `${path}.${k}` : k;
      const x = Object.hasOwn(v, k) ? (v as Record<string, unknown>)[k] : undefined;
      const lax = f as { [OPTIONAL]?: true; [DEFAULTED]?: true };
      if (x === undefined && !lax[OPTIONAL] && !lax[DEFAULTED]) throw new SchemaError(here, "is required");
      const r = f(x, here);
      if (r !== undefined) out[k] = r;
    }
    return out as ObjOf<S>;
  };
}

/** Parses JSON text with a size cap and validates it; every failure is a SchemaError. */
export function parseJson<T>(text: string, v: Validator<T>, maxBytes = 64 * 1024): T {
  if (text.length > maxBytes) throw new SchemaError("", `larger than ${maxBytes} bytes`);
  let data: unknown;
  try { data = JSON.parse(text); } catch (e) { throw new SchemaError("", `not valid JSON (${(e as Error).message.slice(0, 80)})`); }
  return v(data, "");
}

// Shared formats.
export const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
export const NODE_NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
export const mac = str({ max: 17, pattern: MAC_RE, what: "a lower-case MAC address like 52:54:00:12:34:56" });
export const uuid = str({ max: 36, pattern: UUID_RE, what: "a lower-case UUID" });
export const nodeName = str({ max: 63, pattern: NODE_NAME_RE, what: "a host name (a-z, 0-9, '-')" });

/** Normalises MACs as typed by people ("52-54-00-AB-..." or upper case) to the canonical lower-case form. */
export function normaliseMac(s: string): string {
  const m = s.trim().toLowerCase().replace(/-/g, ":");
  if (!MAC_RE.test(m)) throw new Error(`invalid MAC address "${s}": use six hex bytes like 52:54:00:12:34:56`);
  return m;
}
