// X.509 certificate authorities for the site (EC P-384, @peculiar/x509 over WebCrypto): create, load, issue.
import { x509, type X509 } from "./x509.ts";
import { isIP } from "node:net";
import { toPem } from "./pem.ts";


const EC = { name: "ECDSA", namedCurve: "P-384" } as const;
const SIGN = { name: "ECDSA", hash: "SHA-384" } as const;
const DAY_MS = 86_400_000;

export interface Ca {
  cert: X509.X509Certificate;
  certPem: string;
  key: CryptoKey;
}

export interface KeyAndCert { certPem: string; keyPem: string }

/** A positive 128-bit serial in upper-case hex without leading zeros (the form node:tls reports). */
export function randomSerial(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[0] = 0x10 | (b[0] & 0x6f); // top bit clear (positive), never a leading zero nibble
  return Buffer.from(b).toString("hex").toUpperCase();
}

/** Normalises a serial as printed by different tools (case, colons, leading zeros). */
export function normaliseSerial(s: string): string {
  return s.replace(/:/g, "").toUpperCase().replace(/^0+(?=.)/, "");
}

async function exportKeyPem(key: CryptoKey): Promise<string> {
  return toPem("PRIVATE KEY", await crypto.subtle.exportKey("pkcs8", key));
}

/** Creates a self-signed CA that may sign end-entity certificates only (pathLen 0). */
export async function createCa(commonName: string, days = 3650): Promise<KeyAndCert> {
  const keys = (await crypto.subtle.generateKey(EC, true, ["sign", "verify"])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: [{ CN: [commonName] }],
    notBefore: new Date(now - 5 * 60_000), // tolerate small clock skew on nodes
    notAfter: new Date(now + days * DAY_MS),
    keys,
    signingAlgorithm: SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString("pem") + "\n", keyPem: await exportKeyPem(keys.privateKey) };
}

/** Loads a CA from its PEM certificate and PKCS#8 private key. */
export async function loadCa(certPem: string, keyPem: string): Promise<Ca> {
  const cert = new x509.X509Certificate(certPem);
  const der = x509.PemConverter.decodeFirst(keyPem);
  const key = await crypto.subtle.importKey("pkcs8", der, EC, false, ["sign"]);
  return { cert, certPem, key };
}

async function issue(ca: Ca, p: {
  publicKey: X509.PublicKey | CryptoKey; commonName: string; serial?: string; days: number;
  usage: X509.ExtendedKeyUsage; sans?: string[];
}): Promise<X509.X509Certificate> {
  const now = Date.now();
  const ext: X509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
    new x509.ExtendedKeyUsageExtension([p.usage], false),
    await x509.AuthorityKeyIdentifierExtension.create(ca.cert, false),
    await x509.SubjectKeyIdentifierExtension.create(p.publicKey),
  ];
  if (p.sans?.length) {
    ext.push(new x509.SubjectAlternativeNameExtension(
      p.sans.map((s) => ({ type: isIP(s) ? "ip" : "dns", value: s }) as X509.JsonGeneralName), false));
  }
  return await x509.X509CertificateGenerator.create({
    serialNumber: p.serial ?? randomSerial(),
    subject: [{ CN: [p.commonName] }],
    issuer: ca.cert.subjectName,
    notBefore: new Date(now - 5 * 60_000),
    notAfter: new Date(now + p.days * DAY_MS),
    publicKey: p.publicKey,
    signingKey: ca.key,
    signingAlgorithm: SIGN,
    extensions: ext,
  });
}

/** Generates a server key and a serverAuth certificate whose SANs are the given IP addresses and DNS names. */
export async function issueServerCert(ca: Ca, sans: string[], commonName = "airroot server", days = 825): Promise<KeyAndCert> {
  if (sans.length === 0) throw new Error("issuing the server certificate: no addresses or names given for its SANs");
  const keys = (await crypto.subtle.generateKey(EC, true, ["sign", "verify"])) as CryptoKeyPair;
  const cert = await issue(ca, { publicKey: keys.publicKey, commonName, days, usage: x509.ExtendedKeyUsage.serverAuth, sans });
  return { certPem: cert.toString("pem") + "\n", keyPem: await exportKeyPem(keys.privateKey) };
}

/** Signs a clientAuth certificate for a public key taken from a verified CSR; the subject is chosen by the CA. */
export async function issueClientCert(ca: Ca, publicKey: X509.PublicKey, commonName: string, serial: string, days = 365): Promise<X509.X509Certificate> {
  return await issue(ca, { publicKey, commonName, serial, days, usage: x509.ExtendedKeyUsage.clientAuth });
}
