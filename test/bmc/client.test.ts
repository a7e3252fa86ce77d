// The Redfish client's pure parts: fingerprints, the BMC URL, link resolution on the BMC's origin, Redfish error
// messages, and the slot choice. (The wire behaviour is in media.test.ts and hostile.test.ts, against a Redfish
// server written for the tests: no real BMC exists here.)
import { afterAll, expect, test } from "bun:test";
import { BmcError, Redfish, parseBmcUrl, parseFingerprint, redfishMessages } from "../../src/bmc/client";
import { chooseSlot } from "../../src/bmc/media";
import { readSlot } from "../../src/bmc/model";

const HEX = "22:62:B8:33:F7:0F:9A:90:A1:DD:22:E3:90:58:D4:A2:45:F1:B6:49:3E:AF:DC:B8:D2:24:8D:E7:B6:D2:EB:86";
const rf = new Redfish("https://10.0.0.1:8443", { trust: { fingerprint: HEX.replace(/:/g, "") } });
afterAll(() => rf.close());

test("fingerprints in openssl's and other common forms; anything else refused", () => {
  const want = HEX.replace(/:/g, "");
  for (const f of [`sha256:${HEX}`, HEX, HEX.toLowerCase(), want, `sha256 Fingerprint=${HEX}`, `SHA256 Fingerprint=${HEX}\n`]) expect(parseFingerprint(f)).toBe(want);
  for (const f of ["", "sha256:", HEX.slice(3), `${HEX}:00`, "sha1:" + HEX, HEX.replace(/:/g, "::"), "zz".repeat(32)]) expect(() => parseFingerprint(f)).toThrow(BmcError);
});

test("--bmc is https://HOST[:PORT] only", () => {
  expect(parseBmcUrl("https://10.0.0.1").origin).toBe("https://10.0.0.1");
  expect(parseBmcUrl("https://[fd00::1]:8443/").origin).toBe("https://[fd00::1]:8443");
  for (const u of ["http://10.0.0.1", "https://u:p@10.0.0.1", "https://10.0.0.1/redfish/v1", "https://10.0.0.1?x", "10.0.0.1"]) expect(() => parseBmcUrl(u)).toThrow(BmcError);
});

test("neither or both trust options: refused with the way to get a fingerprint", () => {
  expect(() => new Redfish("https://10.0.0.1", { trust: {} })).toThrow(/openssl s_client -connect 10\.0\.0\.1:443 .*-fingerprint -sha256/);
  expect(() => new Redfish("https://10.0.0.1", { trust: { caPem: "x", fingerprint: "A".repeat(64) } })).toThrow(/not both/);
});

test("links are followed only on the BMC's origin", () => {
  expect(rf.resolve("/redfish/v1/Systems/1", "t")).toBe("/redfish/v1/Systems/1");
  expect(rf.resolve("https://10.0.0.1:8443/redfish/v1/Systems/1?$expand=.", "t")).toBe("/redfish/v1/Systems/1?$expand=.");
  expect(rf.resolve("/redfish/v1/Systems/1#/Boot", "t")).toBe("/redfish/v1/Systems/1");
  for (const l of ["https://10.0.0.2:8443/redfish/v1", "https://10.0.0.1/redfish/v1", "http://10.0.0.1:8443/redfish/v1", "//10.0.0.2/redfish/v1", "/\\10.0.0.2/x",
    "https://10.0.0.1:8443//evil/x", "https://u@10.0.0.1:8443/redfish/v1", "redfish/v1", "", "/a b", "/a\x1b[2J", 7, null, { "@odata.id": "/x" }, "/" + "a".repeat(3000)]) {
    expect(() => rf.resolve(l, "t")).toThrow(BmcError);
  }
});

test("Redfish messages: ExtendedInfo first, then error.message; escaped and bounded; the password masked", () => {
  expect(redfishMessages({ error: { message: "general", "@Message.ExtendedInfo": [{ Message: "in use\x1b[2J", Resolution: "Eject." }, { MessageId: "Base.1.0.X" }, 5] } }))
    .toEqual(["in use\\x1b[2J Resolution: Eject.", "Base.1.0.X"]);
  expect(redfishMessages({ error: { message: "only this" } })).toEqual(["only this"]);
  expect(redfishMessages({ "@Message.ExtendedInfo": [{ Message: "top level" }] })).toEqual(["top level"]);
  expect(redfishMessages("x")).toEqual([]);
  expect(redfishMessages({ error: { "@Message.ExtendedInfo": Array(100).fill({ Message: "m".repeat(10_000) }) } })).toEqual([]); // over-long: absent
  expect(redfishMessages({ error: { "@Message.ExtendedInfo": Array(100).fill({ Message: "m".repeat(1000) }) } }).length).toBe(8);
  rf.addSecret("hunter22");
  expect(rf.mask("password hunter22 wrong")).toBe("password *** wrong");
});

test("the slot choice: the one holding the URL, else a free CD, else any CD (a conflict), else USB", () => {
  const s = (id: string, types: string[], image?: string) => readSlot(`/redfish/v1/x/${id}`, { Id: id, MediaTypes: types, Image: image ?? null, Inserted: !!image });
  const url = "http://h/n.iso";
  expect(chooseSlot([s("CD1", ["CD"], "http://h/o.iso"), s("CD2", ["DVD"])], url)).toMatchObject({ slot: { id: "CD2" }, conflicts: [{ id: "CD1" }] });
  expect(chooseSlot([s("CD1", ["CD"], "http://h/o.iso"), s("CD2", ["CD"], url)], url).slot.id).toBe("CD2");
  expect(chooseSlot([s("F", ["Floppy"]), s("U", ["USBStick"])], url)).toMatchObject({ slot: { id: "U" }, conflicts: [] });
  expect(chooseSlot([s("U", ["USBStick"], "http://h/o.iso"), s("CD", ["CD"])], url)).toMatchObject({ slot: { id: "CD" }, conflicts: [] });
  expect(() => chooseSlot([s("F", ["Floppy"])], url)).toThrow(/no virtual media slot takes CD, DVD or USBStick/);
  expect(() => chooseSlot([s("F", ["Floppy"])], url, "F")).toThrow(/takes Floppy, not CD, DVD or USBStick/);
  expect(() => chooseSlot([s("CD", ["CD"])], url, "X")).toThrow(/no media slot X; the BMC has CD/);
});
