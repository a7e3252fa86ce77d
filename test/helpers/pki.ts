// Test certificate authorities made with the openssl CLI (a real, independent implementation).
import { join } from "node:path";
import { mkdirSync, writeFileSync } from "node:fs";

export interface TestPki {
  dir: string;
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
}

function run(cmd: string[], cwd: string): void {
  const r = Bun.spawnSync(cmd, { cwd, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed: ${r.stderr.toString()}`);
}

/** A CA plus one server certificate whose SANs are the given IPs and DNS names. */
/** Loopback addresses tests use for "different servers". */
export const LOOPBACK_SANS = [...Array.from({ length: 9 }, (_, i) => `127.0.0.${i + 1}`), "::1", "localhost"];

export function makeTestPki(dir: string, sans: string[] = LOOPBACK_SANS, name = "Test Site CA"): TestPki {
  mkdirSync(dir, { recursive: true });
  const caKey = join(dir, "ca.key"), caCert = join(dir, "ca.crt");
  const serverKey = join(dir, "server.key"), serverCert = join(dir, "server.crt"), csr = join(dir, "server.csr");
  run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", caKey, "-out", caCert, "-days", "2", "-subj", `/CN=${name}`], dir);
  run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", serverKey, "-out", csr, "-subj", "/CN=airroot-test-server"], dir);
  const san = sans.map((s) => (/^[0-9.]+$/.test(s) || s.includes(":") ? `IP:${s}` : `DNS:${s}`)).join(",");
  const ext = join(dir, "ext.cnf");
  writeFileSync(ext, `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
  run(["openssl", "x509", "-req", "-in", csr, "-CA", caCert, "-CAkey", caKey, "-CAcreateserial",
    "-out", serverCert, "-days", "2", "-extfile", ext], dir);
  return { dir, caCert, caKey, serverCert, serverKey };
}
