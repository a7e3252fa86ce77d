// The kernel keyring as the root step uses it for dm-crypt's key, on this host's kernel: a logon key can be added
// but never read back by userspace, and once invalidated it is gone from every keyring (/proc/keys).
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { addLogonKey, dropKey, readKey } from "../../src/sys/keyring";

const listed = (desc: string) => readFileSync("/proc/keys", "utf8").split("\n").some((l) => l.includes(` ${desc}:`) || l.endsWith(` ${desc}`));

test("a logon key: added to the thread keyring, unreadable from userspace, gone once dropped", async () => {
  const desc = `airroot:test-${process.pid}`;
  const payload = Buffer.alloc(64, 0x5a);
  const serial = addLogonKey(desc, payload);
  expect(serial).toBeGreaterThan(0);
  expect(payload.every((b) => b === 0x5a)).toBe(true); // the caller's buffer is left alone
  expect(listed(desc)).toBe(true);
  expect(() => readKey(serial)).toThrow(/keyctl\(READ, key \d+\) failed: (ENOTSUP|EOPNOTSUPP)/);
  expect(dropKey(serial)).toBeUndefined();
  // The kernel's key garbage collector removes invalidated keys shortly after (until it ran, a read may still be
  // answered "not supported", the logon type's answer: never the key).
  const deadline = Date.now() + 5000;
  while (listed(desc) && Date.now() < deadline) await Bun.sleep(50);
  expect(listed(desc)).toBe(false);
  expect(() => readKey(serial)).toThrow(/failed: (EACCES|ENOKEY|EKEYREVOKED)/);
});

test("a logon key needs a PREFIX:NAME description", () => {
  expect(() => addLogonKey("nocolon", Buffer.alloc(64, 1))).toThrow(/must be PREFIX:NAME/);
});
