// The node's identity from sysfs: MACs of device-backed NICs, SMBIOS UUID, placeholders ignored.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { mkdirSync, writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { localMacs, smbiosUuid } from "../../src/client/identity.ts";

afterAll(removeScratchDirs);

function nic(root: string, name: string, mac: string, device: boolean): void {
  mkdirSync(join(root, name), { recursive: true });
  writeFileSync(join(root, name, "address"), mac + "\n");
  if (device) mkdirSync(join(root, name, "device"));
}

test("localMacs lists device-backed NICs only, lower case, sorted; junk is skipped", () => {
  const root = scratchDir();
  nic(root, "eth1", "52:54:00:AB:00:02", true);
  nic(root, "eth0", "52:54:00:ab:00:01", true);
  nic(root, "lo", "00:00:00:00:00:00", false);
  nic(root, "veth9", "aa:bb:cc:dd:ee:ff", false);
  nic(root, "weird", "not-a-mac", true);
  expect(localMacs(root)).toEqual(["52:54:00:ab:00:01", "52:54:00:ab:00:02"]);
  expect(localMacs(join(root, "missing"))).toEqual([]);
});

test("smbiosUuid reads a real UUID and ignores absent, all-zero, all-F and malformed values", () => {
  const d = scratchDir();
  const f = join(d, "product_uuid");
  writeFileSync(f, "4C4C4544-0035-3010-8052-B4C04F564433\n");
  expect(smbiosUuid(f)).toBe("4c4c4544-0035-3010-8052-b4c04f564433");
  for (const bad of ["00000000-0000-0000-0000-000000000000", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "garbage"]) {
    writeFileSync(f, bad);
    expect(smbiosUuid(f)).toBeUndefined();
  }
  expect(smbiosUuid(join(d, "none"))).toBeUndefined();
});
