// Bounded reader / writer, PCR selections, public areas and the credential KDFs (known structure round trips).
import { expect, test } from "bun:test";
import { Reader, TpmFormatError, Writer, fromHex, hex } from "../../src/tpm/marshal";
import { marshalPublic, parsePublic, readPcrSelections, writePcrSelections } from "../../src/tpm/structures";
import { akTemplate, ekTemplate, sealedTemplate, srkTemplate } from "../../src/tpm/templates";
import { kdfa, kdfe } from "../../src/tpm/makecredential";
import { TPM_ALG } from "../../src/tpm/constants";

test("writer and reader round-trip every field type; reads past the end throw TpmFormatError", () => {
  const b = new Writer().u8(0xab).u16(0xbeef).u32(0xdeadbeef).tpm2b(new Uint8Array([1, 2, 3])).bytes(new Uint8Array(300).fill(5)).finish();
  const r = new Reader(b);
  expect([r.u8(), r.u16(), r.u32()]).toEqual([0xab, 0xbeef, 0xdeadbeef]);
  expect(hex(r.tpm2b())).toBe("010203");
  expect(r.bytes(300).length).toBe(300);
  r.end();
  expect(() => r.u8("x")).toThrow(TpmFormatError);
  expect(() => new Reader(new Uint8Array([0, 5, 1])).tpm2b("field")).toThrow(/truncated reading field/);
  expect(() => new Reader(new Uint8Array([0, 70, ...new Uint8Array(70)])).tpm2b("digest", 64)).toThrow(/exceeds limit 64/);
  expect(() => new Reader(fromHex("ffffffff")).count("list", 8)).toThrow(/count 4294967295 exceeds limit 8/);
  expect(() => new Reader(new Uint8Array(3)).end("thing")).toThrow(/3 unexpected trailing bytes after thing/);
  expect(() => new Writer().u16(70000)).toThrow(RangeError);
  expect(() => fromHex("xyz")).toThrow(TpmFormatError);
  expect(new Reader(fromHex("0000000100000002")).u64()).toBe(0x100000002n);
});

test("PCR selections: bitmaps as tpm2-tools writes them (sizeofSelect 3)", () => {
  const w = writePcrSelections(new Writer(), [{ hash: TPM_ALG.SHA256, pcrs: [0, 7, 15, 23] }]).finish();
  expect(hex(w)).toBe("00000001" + "000b" + "03" + "818080");
  expect(readPcrSelections(new Reader(w))).toEqual([{ hash: TPM_ALG.SHA256, pcrs: [0, 7, 15, 23] }]);
});

test("templates marshal and parse back to identical bytes", () => {
  for (const t of [srkTemplate("ecc"), srkTemplate("rsa"), ekTemplate("ecc"), ekTemplate("rsa"), akTemplate(), sealedTemplate(new Uint8Array(32).fill(1))]) {
    const raw = marshalPublic(t);
    const p = parsePublic(new Reader(raw));
    expect(hex(marshalPublic(p))).toBe(hex(raw));
    expect(p.attributes).toBe(t.attributes);
  }
  // TCG EK template L-2 attributes and policy, byte for byte.
  expect(hex(marshalPublic(ekTemplate("ecc"))).slice(0, 20)).toBe("0023000b000300b20020");
});

test("KDFa/KDFe: deterministic, sized, label- and context-sensitive", () => {
  const key = new Uint8Array(32).fill(1);
  const a = kdfa(TPM_ALG.SHA256, key, "STORAGE", new Uint8Array([1]), new Uint8Array(0), 128);
  expect(a.length).toBe(16);
  expect(hex(kdfa(TPM_ALG.SHA256, key, "STORAGE", new Uint8Array([1]), new Uint8Array(0), 128))).toBe(hex(a));
  expect(hex(kdfa(TPM_ALG.SHA256, key, "INTEGRITY", new Uint8Array([1]), new Uint8Array(0), 128))).not.toBe(hex(a));
  expect(kdfa(TPM_ALG.SHA256, key, "X", new Uint8Array(0), new Uint8Array(0), 600).length).toBe(75); // several blocks
  expect(kdfa(TPM_ALG.SHA256, key, "X", new Uint8Array(0), new Uint8Array(0), 7)[0]).toBeLessThan(128); // partial byte masked
  expect(kdfe(TPM_ALG.SHA256, key, "IDENTITY", new Uint8Array([2]), new Uint8Array([3]), 256).length).toBe(32);
  // The end-to-end proof of both KDFs is test/tpm/activation.test.ts (tpm2-tools and the TPM agree with us).
});
