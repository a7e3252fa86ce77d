// The selftest's TPM part: the node credential's lifecycle (seal → unseal → lock → unseal refused) through src/tpm
// against a private swtpm, so a workstation without a TPM exercises the same code a node runs at boot.
import { randomBytes } from "node:crypto";
import { CredentialError, lockCredential, openTpm, sealCredential, unsealCredential, type Tpm } from "../tpm/tpm";
import type { Report } from "./report";
import type { Scratch } from "./scratch";
import { which } from "./proc";
import { startSwtpm } from "./swtpm";

export async function tpmChecks(report: Report, scratch: Scratch): Promise<void> {
  if (!which("swtpm")) {
    report.skip("tpm: seal, unseal, lock, unseal refused", "swtpm is not on PATH (Debian: apt install swtpm)");
    return;
  }
  let tpm: Tpm | undefined;
  const started = await report.check("tpm: private swtpm on 127.0.0.1 answers", async () => {
    const sw = await startSwtpm(scratch.path("swtpm"));
    scratch.defer("stopping swtpm", () => sw.stop());
    const t = await openTpm(sw.spec, { timeoutMs: 10_000 });
    scratch.defer("closing the TPM connection", () => t.close());
    tpm = t;
    return sw.spec;
  }, 12_000);
  if (!started || !tpm) {
    report.skip("tpm: seal, unseal, lock, unseal refused", "no TPM to talk to (see above)");
    return;
  }
  const t = tpm;
  const secret = randomBytes(1500); // a few NV pieces' worth, like a key and certificate
  const sealed = await report.check("tpm: seal a credential to PCR 15", async () => {
    const info = await sealCredential(t, secret);
    return `object 0x${info.objectHandle.toString(16)}, ${info.nvIndices.length} NV index(es)`;
  }, 20_000);
  if (!sealed) { report.skip("tpm: unseal, lock, unseal refused", "sealing failed"); return; }
  const unsealed = await report.check("tpm: unseal gives back the same bytes", async () => {
    const got = await unsealCredential(t);
    if (!Buffer.from(got).equals(secret)) throw new Error(`unsealed ${got.length} bytes that differ from the ${secret.length} sealed`);
  }, 15_000);
  if (!unsealed) { report.skip("tpm: lock, unseal refused", "unsealing failed"); return; }
  await report.check("tpm: lock, then unseal is refused for this boot", async () => {
    await lockCredential(t);
    try {
      await unsealCredential(t);
    } catch (e) {
      if (e instanceof CredentialError && e.kind === "locked") return "refused as locked";
      throw new Error(`unseal after lock failed, but not as "locked": ${(e as Error).message}`);
    }
    throw new Error("unseal after lock SUCCEEDED: locking does not protect the credential");
  }, 15_000);
}
