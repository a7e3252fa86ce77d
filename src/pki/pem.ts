// PEM armour: encode DER bytes under a label and decode exactly one block with an expected label.

/** Wraps DER bytes in a PEM block with 64-column base64 lines. */
export function toPem(label: string, der: ArrayBuffer | Uint8Array): string {
  const b64 = Buffer.from(der instanceof Uint8Array ? der : new Uint8Array(der)).toString("base64");
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/** Decodes the first PEM block labelled `label`; throws naming the label when absent or malformed. */
export function fromPem(text: string, label: string): Uint8Array {
  const begin = `-----BEGIN ${label}-----`, end = `-----END ${label}-----`;
  const i = text.indexOf(begin);
  const j = i < 0 ? -1 : text.indexOf(end, i + begin.length);
  if (i < 0 || j < 0) throw new Error(`no PEM block "${label}" found`);
  const body = text.slice(i + begin.length, j).replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body) || body.length % 4 !== 0) throw new Error(`PEM block "${label}" is not valid base64`);
  const der = Buffer.from(body, "base64");
  if (der.length === 0) throw new Error(`PEM block "${label}" is empty`);
  return new Uint8Array(der);
}
