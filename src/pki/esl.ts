// EFI_SIGNATURE_LIST (UEFI 2.x, section 32.4.1): the form firmware takes certificates in, for its Secure Boot db and
// for the TLS CA list HTTPS boot checks servers against (edk2's TlsCaCertificate variable; OVMF reads it from QEMU's
// fw_cfg file etc/edk2/https/cacerts). One list per certificate, since every entry of a list has the same size.
import { createHash } from "node:crypto";

/** EFI_CERT_X509_GUID a5c059a1-94e4-4aa7-87b5-ab155c2bf072. */
export const EFI_CERT_X509_GUID = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072";
/** The SignatureOwner airroot writes: a fixed GUID derived from the name, so the same CA gives the same bytes. */
export const AIRROOT_OWNER_GUID = guidFromHash("airroot site CA");

const HEADER = 28; // SignatureType (16) + SignatureListSize (4) + SignatureHeaderSize (4) + SignatureSize (4)
const OWNER = 16;

function guidFromHash(s: string): string {
  const h = createHash("sha256").update(s).digest();
  h[6] = (h[6]! & 0x0f) | 0x50; // a name-based (v5-style) GUID
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString("hex");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/** A GUID in EFI's byte order: the first three fields little-endian, the rest as written. */
export function guidBytes(guid: string): Buffer {
  const m = /^([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})$/i.exec(guid);
  if (!m) throw new Error(`"${guid.slice(0, 40)}" is not a GUID`);
  const b = Buffer.alloc(16);
  b.writeUInt32LE(parseInt(m[1]!, 16), 0);
  b.writeUInt16LE(parseInt(m[2]!, 16), 4);
  b.writeUInt16LE(parseInt(m[3]!, 16), 6);
  Buffer.from(m[4]! + m[5]!, "hex").copy(b, 8);
  return b;
}

/** DER certificates from PEM text (every CERTIFICATE block, in order). */
export function pemCertificates(pem: string): Buffer[] {
  const out: Buffer[] = [];
  for (const m of pem.matchAll(/-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----/g)) {
    out.push(Buffer.from(m[1]!.replace(/\s+/g, ""), "base64"));
  }
  if (!out.length) throw new Error("no PEM CERTIFICATE block found");
  return out;
}

/** The signature lists for these DER certificates, concatenated (what firmware variables and fw_cfg take). */
export function x509SignatureLists(ders: Buffer[], owner = AIRROOT_OWNER_GUID): Buffer {
  const type = guidBytes(EFI_CERT_X509_GUID), who = guidBytes(owner);
  return Buffer.concat(ders.map((der) => {
    if (der.length < 16 || der[0] !== 0x30) throw new Error("not a DER certificate (no SEQUENCE at the start)");
    const sigSize = OWNER + der.length;
    const head = Buffer.alloc(HEADER);
    type.copy(head, 0);
    head.writeUInt32LE(HEADER + sigSize, 16);
    head.writeUInt32LE(0, 20);
    head.writeUInt32LE(sigSize, 24);
    return Buffer.concat([head, who, der]);
  }));
}

/** Reads signature lists back: each entry's type, owner and data (for `inspect`-style output and tests). */
export function parseSignatureLists(b: Buffer): { type: string; owner: string; data: Buffer }[] {
  const out: { type: string; owner: string; data: Buffer }[] = [];
  const guid = (x: Buffer) => {
    const h = x.toString("hex");
    const le = (s: string) => s.match(/../g)!.reverse().join("");
    return `${le(h.slice(0, 8))}-${le(h.slice(8, 12))}-${le(h.slice(12, 16))}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
  };
  let off = 0;
  while (off < b.length) {
    if (b.length - off < HEADER) throw new Error(`signature list at ${off}: truncated header`);
    const listSize = b.readUInt32LE(off + 16), hdrSize = b.readUInt32LE(off + 20), sigSize = b.readUInt32LE(off + 24);
    if (listSize < HEADER + hdrSize || off + listSize > b.length || sigSize < OWNER || (listSize - HEADER - hdrSize) % sigSize !== 0) {
      throw new Error(`signature list at ${off}: inconsistent sizes (list ${listSize}, header ${hdrSize}, entry ${sigSize})`);
    }
    const type = guid(b.subarray(off, off + 16));
    for (let p = off + HEADER + hdrSize; p < off + listSize; p += sigSize) {
      out.push({ type, owner: guid(b.subarray(p, p + OWNER)), data: Buffer.from(b.subarray(p + OWNER, p + sigSize)) });
    }
    off += listSize;
  }
  return out;
}
