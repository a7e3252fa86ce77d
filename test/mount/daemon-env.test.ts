// The detached mount daemon's runtime settings (src/mount/background.ts): memory-sized JSC heap scaled with the
// cache, upper JIT tiers off, and anything the admin set in the environment wins.
import { expect, test } from "bun:test";
import { daemonEnv } from "../../src/mount/background";

const MiB = 1048576;

test("defaults: heap sized for the default 8 MiB cache, FTL and DFG off", () => {
  const env = daemonEnv(["https://a/img", "/mnt"], {});
  expect(env.BUN_JSC_forceRAMSize).toBe(String((256 + 16) * MiB));
  expect(env.BUN_JSC_useFTLJIT).toBe("0");
  expect(env.BUN_JSC_useDFGJIT).toBe("0");
});

test("the heap follows --cache-mb in both spellings; a bad value keeps the default", () => {
  expect(daemonEnv(["--cache-mb", "64", "u", "m"], {}).BUN_JSC_forceRAMSize).toBe(String((256 + 128) * MiB));
  expect(daemonEnv(["--cache-mb=32", "u", "m"], {}).BUN_JSC_forceRAMSize).toBe(String((256 + 64) * MiB));
  expect(daemonEnv(["--cache-mb", "lots", "u", "m"], {}).BUN_JSC_forceRAMSize).toBe(String((256 + 16) * MiB));
});

test("the environment wins over our settings", () => {
  const env = daemonEnv([], { BUN_JSC_useDFGJIT: "1", PATH: "/bin" });
  expect(env.BUN_JSC_useDFGJIT).toBe("1");
  expect(env.PATH).toBe("/bin");
});
