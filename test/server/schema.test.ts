// Strict JSON validation of untrusted bodies: exact shapes accepted, everything else a SchemaError (fuzzed, bounded).
import { expect, test } from "bun:test";
import { parseJson, SchemaError, normaliseMac } from "../../src/server/schema.ts";
import { activateRequestSchema, enrollRequestSchema } from "../../src/server/enroll.ts";
import { sshCertRequestSchema, statusRequestSchema } from "../../src/server/selfapi.ts";
import { configSchema, defaultConfig } from "../../src/server/state.ts";

const GOOD_ENROLL = { macs: ["52:54:00:00:00:01"], uuid: "4c4c4544-0000-1111-2222-333344445555", name: "n1", csr: "x", tpm: { ekPublic: "AAEC", akPublic: "AAEC" } };

test("valid bodies pass and come back with exactly their fields", () => {
  expect(parseJson(JSON.stringify(GOOD_ENROLL), enrollRequestSchema)).toEqual(GOOD_ENROLL);
  expect(parseJson('{"macs":["52:54:00:00:00:01"],"csr":"x"}', enrollRequestSchema)).toEqual({ macs: ["52:54:00:00:00:01"], csr: "x" });
  expect(parseJson('{"stage":"root-mounted"}', statusRequestSchema)).toEqual({ stage: "root-mounted" });
  expect(parseJson('{"hostKeys":["k"]}', sshCertRequestSchema)).toEqual({ hostKeys: ["k"] });
  const d = defaultConfig();
  expect(configSchema(JSON.parse(JSON.stringify(d)), "")).toEqual(d);
});

test("each kind of bad field is named in the error", () => {
  const bad: [unknown, string][] = [
    [{ ...GOOD_ENROLL, extra: 1 }, "extra: unknown field"],
    [{ ...GOOD_ENROLL, macs: [] }, "macs: needs at least 1 entry"],
    [{ ...GOOD_ENROLL, macs: ["52:54:00:00:00:0G"] }, "macs[0]: is not a lower-case MAC"],
    [{ ...GOOD_ENROLL, macs: Array(33).fill("52:54:00:00:00:01") }, "macs: has more than 32 entries"],
    [{ ...GOOD_ENROLL, uuid: 5 }, "uuid: must be a string"],
    [{ ...GOOD_ENROLL, name: "../etc" }, "name: is not a host name"],
    [{ ...GOOD_ENROLL, csr: undefined }, "csr: is required"],
    [{ ...GOOD_ENROLL, tpm: { ekPublic: "not base64!", akPublic: "AAEC" } }, "tpm.ekPublic: is not base64"],
    [{ ...GOOD_ENROLL, tpm: { ekPublic: "AAEC", akPublic: "AAEC", x: 1 } }, "tpm.x: unknown field"],
    [{ ...GOOD_ENROLL, tpm: { ekPublic: "AAEC" } }, "tpm.akPublic: is required"],
    [[GOOD_ENROLL], "body: must be an object"],
    [{ ...GOOD_ENROLL, __proto__: { admin: true } }, ""],
  ];
  for (const [v, msg] of bad.slice(0, -1)) {
    expect(() => enrollRequestSchema(v, "")).toThrow(SchemaError);
    try { enrollRequestSchema(v, ""); } catch (e) { expect((e as Error).message).toContain(msg); }
  }
  // "__proto__" in JSON text is an own property and is refused like any unknown field.
  expect(() => parseJson('{"macs":["52:54:00:00:00:01"],"csr":"x","__proto__":{"a":1}}', enrollRequestSchema)).toThrow("__proto__: unknown field");
  expect(() => parseJson("x".repeat(70_000), enrollRequestSchema)).toThrow("larger than");
  const longKey = JSON.stringify({ macs: ["52:54:00:00:00:01"], csr: "x", ["k\n".repeat(5000)]: 1 });
  try { parseJson(longKey, enrollRequestSchema); } catch (e) { expect((e as Error).message.length).toBeLessThan(200); expect((e as Error).message).not.toContain("\n"); }
  expect(normaliseMac("52-54-00-AB-CD-EF")).toBe("52:54:00:ab:cd:ef");
});

/** Random JSON-ish values, bounded in depth and size. */
function randomValue(depth = 0): unknown {
  const r = Math.random();
  if (depth > 3 || r < 0.2) return [null, true, 0, -1, 1e300, "", "52:54:00:00:00:01", "x".repeat(Math.floor(Math.random() * 300))][Math.floor(Math.random() * 8)];
  if (r < 0.5) return Array.from({ length: Math.floor(Math.random() * 4) }, () => randomValue(depth + 1));
  const keys = ["macs", "uuid", "name", "csr", "tpm", "ekPublic", "akPublic", "id", "secret", "stage", "detail", "digest", "hostKeys", "zzz"];
  const o: Record<string, unknown> = {};
  for (let i = 0; i < Math.floor(Math.random() * 5); i++) o[keys[Math.floor(Math.random() * keys.length)]] = randomValue(depth + 1);
  return o;
}

test("fuzz: random values, mutated and truncated JSON give a value or SchemaError, never anything else (bounded)", () => {
  const schemas = [enrollRequestSchema, activateRequestSchema, statusRequestSchema, sshCertRequestSchema, configSchema] as const;
  const goodText = JSON.stringify(GOOD_ENROLL);
  for (let i = 0; i < 2000; i++) {
    let text: string;
    if (i % 3 === 0) text = JSON.stringify(randomValue());
    else if (i % 3 === 1) text = goodText.slice(0, Math.floor(Math.random() * goodText.length));
    else {
      const a = goodText.split("");
      a[Math.floor(Math.random() * a.length)] = String.fromCharCode(Math.floor(Math.random() * 128));
      text = a.join("");
    }
    for (const s of schemas) {
      try { parseJson(text ?? "null", s as typeof enrollRequestSchema); } catch (e) { expect(e).toBeInstanceOf(SchemaError); }
    }
  }
});
