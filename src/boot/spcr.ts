// Parser for the ACPI SPCR table (Serial Port Console Redirection): which serial port and speed firmware uses.

export type SpcrResult =
  | { ok: true; tty: string; baud: number; port: number }
  | { ok: false; reason: string };

/** Legacy PC COM port I/O addresses, in ttyS order. */
const COM_PORTS = [0x3f8, 0x2f8, 0x3e8, 0x2e8];
/** SPCR baud rate codes (table field at offset 58). 0 means "as is" and tells us nothing. */
const BAUD_CODES: Record<number, number> = { 3: 9600, 4: 19200, 6: 57600, 7: 115200 };
/** Interface types that the 8250 driver serves as ttyS: 16550, 16450, 16550-compatible with GAS. */
const UART_TYPES = new Set([0x00, 0x01, 0x12]);

/**
 * Parses an SPCR table (the raw bytes of /sys/firmware/acpi/tables/SPCR). Only I/O-port 8250 UARTs at the legacy
 * COM addresses map to a ttyS name; anything else returns a reason, never throws.
 */
export function parseSpcr(buf: Uint8Array): SpcrResult {
  if (buf.length < 80) return { ok: false, reason: `SPCR table is ${buf.length} bytes, shorter than 80` };
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const sig = String.fromCharCode(buf[0], buf[1], buf[2], buf[3]);
  if (sig !== "SPCR") return { ok: false, reason: `signature is ${JSON.stringify(sig)}, not "SPCR"` };
  const length = dv.getUint32(4, true);
  if (length < 80 || length > buf.length) return { ok: false, reason: `header length ${length} does not fit the ${buf.length}-byte table` };
  let sum = 0;
  for (let i = 0; i < length; i++) sum = (sum + buf[i]) & 0xff;
  if (sum !== 0) return { ok: false, reason: "checksum mismatch" };
  const iface = buf[36];
  if (!UART_TYPES.has(iface)) return { ok: false, reason: `interface type 0x${iface.toString(16)} is not an 8250/16550 UART` };
  const space = buf[40];
  if (space !== 1) return { ok: false, reason: `base address is in address space ${space}, not system I/O` };
  const addr = dv.getBigUint64(44, true);
  const idx = COM_PORTS.findIndex((p) => BigInt(p) === addr);
  if (idx < 0) return { ok: false, reason: `I/O port 0x${addr.toString(16)} is not a legacy COM port` };
  const baud = BAUD_CODES[buf[58]];
  if (!baud) return { ok: false, reason: `baud rate code ${buf[58]} is not a fixed rate` };
  return { ok: true, tty: `ttyS${idx}`, baud, port: COM_PORTS[idx] };
}

/** Builds a valid SPCR table (for tests and documentation of the layout). */
export function buildSpcr(o: { port: number; baudCode: number; iface?: number; space?: number; revision?: number }): Uint8Array {
  const b = new Uint8Array(80);
  const dv = new DataView(b.buffer);
  b.set([0x53, 0x50, 0x43, 0x52], 0); // "SPCR"
  dv.setUint32(4, 80, true);
  b[8] = o.revision ?? 2;
  b[36] = o.iface ?? 0;
  b[40] = o.space ?? 1;
  b[41] = 8;
  dv.setBigUint64(44, BigInt(o.port), true);
  b[58] = o.baudCode;
  let sum = 0;
  for (let i = 0; i < 80; i++) sum = (sum + b[i]) & 0xff;
  b[9] = (256 - sum) & 0xff;
  return b;
}
