// Before a rescue shell the node credential's PCR is extended (a console user cannot unseal it), with a real swtpm;
// an unreachable TPM gives a warning within the time bound, never a hang or a crash.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { startSwtpm, type Swtpm } from "../helpers/swtpm";
import { lockBeforeRescue } from "../../src/boot/trust";
import { freePort } from "../helpers/ports";

let tpm: Swtpm | undefined;
afterAll(async () => { await tpm?.stop(); removeScratchDirs(); });

test("lockBeforeRescue extends the lock PCR once; no TPM: nothing; a dead TPM: a warning", async () => {
  tpm = await startSwtpm(join(scratchDir("airroot-rescuelock-"), "tpm"));
  const pcr = () => tpm!.tools(["tpm2_pcrread", "sha256:15"]).stdout;
  const before = pcr();
  expect(before).toContain("0x0000000000000000000000000000000000000000000000000000000000000000");
  expect(await lockBeforeRescue(tpm.spec)).toBe("TPM credential locked for the rest of this boot (rescue)");
  expect(pcr()).not.toBe(before);
  expect(await lockBeforeRescue(undefined)).toBeUndefined();
  const dead = await freePort("127.0.0.1");
  const t0 = Date.now();
  expect(await lockBeforeRescue(`swtpm:127.0.0.1:${dead}`)).toMatch(/^warning: could not lock the TPM credential before rescue: /);
  expect(Date.now() - t0).toBeLessThan(15_000);
}, 60_000);
