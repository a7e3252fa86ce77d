import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { createCa, issueClientCert, issueServerCert, loadCa, normaliseSerial } from "../../src/pki/x509ca.ts";
import { makeCsr, verifyCsr } from "../../src/pki/csr.ts";

afterAll(removeScratchDirs);

function openssl(args: string[]): string {
  const r = Bun.spawnSync(["openssl", ...args], { stdout: "pipe", stderr: "pipe" });
  return r.stdout.toString() + r.stderr.toString();
}

test("site CA issues a server cert with IPv4, IPv6 link-local and DNS SANs that openssl verifies", async () => {
  const dir = scratchDir();
  const ca = await loadCa(...Object.values(await createCa("Site CA")) as [string, string]);
  const srv = await issueServerCert(ca, ["127.0.0.1", "fe80::1234", "::1", "head.example"]);
  writeFileSync(join(dir, "ca.pem"), ca.certPem);
  writeFileSync(join(dir, "srv.pem"), srv.certPem);
  expect(openssl(["verify", "-CAfile", join(dir, "ca.pem"), "-purpose", "sslserver", join(dir, "srv.pem")])).toContain("srv.pem: OK");
  const text = openssl(["x509", "-in", join(dir, "srv.pem"), "-noout", "-text"]);
  expect(text).toContain("IP Address:127.0.0.1");
  expect(text).toContain("IP Address:FE80:0:0:0:0:0:0:1234");
  expect(text).toContain("DNS:head.example");
  expect(text).toContain("ecdsa-with-SHA384");
  expect(openssl(["x509", "-in", join(dir, "ca.pem"), "-noout", "-text"])).toContain("CA:TRUE, pathlen:0");
});

test("node CA signs a client cert for a CSR's key with the CA's chosen subject and serial", async () => {
  const dir = scratchDir();
  const c = await createCa("Node CA");
  const ca = await loadCa(c.certPem, c.keyPem);
  const { csrPem } = await makeCsr("whatever-the-node-says");
  const v = await verifyCsr(csrPem);
  const cert = await issueClientCert(ca, v.publicKey, "node07", "1A2B3C");
  writeFileSync(join(dir, "ca.pem"), ca.certPem);
  writeFileSync(join(dir, "c.pem"), cert.toString("pem"));
  expect(openssl(["verify", "-CAfile", join(dir, "ca.pem"), "-purpose", "sslclient", join(dir, "c.pem")])).toContain("c.pem: OK");
  const text = openssl(["x509", "-in", join(dir, "c.pem"), "-noout", "-subject", "-serial"]);
  expect(text).toContain("CN = node07");
  expect(text).toContain("serial=1A2B3C");
  expect(normaliseSerial("00:1a:2b:3c")).toBe("1A2B3C");
});
