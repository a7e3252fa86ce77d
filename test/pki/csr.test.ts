import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { CsrError, makeCsr, verifyCsr } from "../../src/pki/csr.ts";
import { fromPem, toPem } from "../../src/pki/pem.ts";

afterAll(removeScratchDirs);

function opensslCsr(dir: string, keyArgs: string[]): string {
  const out = join(dir, `${keyArgs.join("_").replace(/[^a-z0-9]/gi, "")}.csr`);
  const r = Bun.spawnSync(["openssl", "req", "-new", "-newkey", ...keyArgs, "-nodes", "-keyout", out + ".key", "-out", out, "-subj", "/CN=n"],
    { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(r.stderr.toString());
  return readFileSync(out, "utf8");
}

test("accepts openssl CSRs for EC P-256, P-384 and RSA 2048; refuses ed25519", async () => {
  const dir = scratchDir();
  expect((await verifyCsr(opensslCsr(dir, ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]))).keyAlgorithm).toBe("ECDSA P-256");
  expect((await verifyCsr(opensslCsr(dir, ["ec", "-pkeyopt", "ec_paramgen_curve:P-384"]))).keyAlgorithm).toBe("ECDSA P-384");
  expect((await verifyCsr(opensslCsr(dir, ["rsa:2048"]))).keyAlgorithm).toBe("RSA 2048");
  await expect(verifyCsr(opensslCsr(dir, ["ed25519"]))).rejects.toBeInstanceOf(CsrError);
});

test("a CSR whose signed content was altered is refused", async () => {
  const { csrPem } = await makeCsr("node1");
  const der = fromPem(csrPem, "CERTIFICATE REQUEST");
  // Flip a byte inside the subject CN ("node1"): the structure stays valid, the signature does not.
  const at = Buffer.from(der).indexOf(Buffer.from("node1"));
  der[at] ^= 0x01;
  await expect(verifyCsr(toPem("CERTIFICATE REQUEST", der))).rejects.toThrow(/signature does not verify/);
});

test("fuzz: random, truncated and bit-flipped CSRs only ever give CsrError (bounded)", async () => {
  const { csrPem } = await makeCsr("node1");
  const good = fromPem(csrPem, "CERTIFICATE REQUEST");
  const inputs: unknown[] = [undefined, null, 42, {}, "", "x".repeat(20_000), "-----BEGIN CERTIFICATE REQUEST-----\n!!\n-----END CERTIFICATE REQUEST-----"];
  for (let i = 0; i < 150; i++) {
    const kind = i % 3;
    let der: Uint8Array;
    if (kind === 0) der = crypto.getRandomValues(new Uint8Array(1 + Math.floor(Math.random() * 600)));
    else if (kind === 1) der = good.slice(0, Math.floor(Math.random() * good.length));
    else {
      der = good.slice();
      for (let k = 0; k < 1 + (i % 4); k++) der[Math.floor(Math.random() * der.length)] ^= 1 << Math.floor(Math.random() * 8);
    }
    inputs.push(der.length ? toPem("CERTIFICATE REQUEST", der) : "");
  }
  let accepted = 0;
  for (const input of inputs) {
    try {
      await verifyCsr(input);
      accepted++; // a flip in an unsigned part (e.g. inside the signature's DER padding) could still verify: rare, allowed
    } catch (e) {
      expect(e).toBeInstanceOf(CsrError);
    }
  }
  expect(accepted).toBeLessThan(5);
});
