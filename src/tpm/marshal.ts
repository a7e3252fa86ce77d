// Bounded big-endian reader and growable writer for TPM 2.0 wire structures.

/** A TPM reply (or a file holding a TPM structure) is malformed: truncated, oversized or inconsistent. */
export class TpmFormatError extends Error {
  override name = "TpmFormatError";
}

/** Reads from a byte buffer; every read checks the remaining length first, so garbage input cannot overrun. */
export class Reader {
  private pos = 0;
  constructor(private readonly buf: Uint8Array, private readonly what = "TPM data") {}

  get remaining(): number { return this.buf.length - this.pos; }
  get offset(): number { return this.pos; }

  private need(n: number, field: string): void {
    if (n > this.remaining) {
      throw new TpmFormatError(`${this.what}: truncated reading ${field} (need ${n} bytes at offset ${this.pos}, have ${this.remaining})`);
    }
  }

  u8(field = "u8"): number { this.need(1, field); return this.buf[this.pos++]; }
  u16(field = "u16"): number {
    this.need(2, field);
    const v = (this.buf[this.pos] << 8) | this.buf[this.pos + 1];
    this.pos += 2;
    return v;
  }
  u32(field = "u32"): number {
    this.need(4, field);
    const b = this.buf, p = this.pos;
    this.pos += 4;
    return ((b[p] << 24) >>> 0) + (b[p + 1] << 16) + (b[p + 2] << 8) + b[p + 3];
  }
  u64(field = "u64"): bigint {
    const hi = this.u32(field), lo = this.u32(field);
    return (BigInt(hi) << 32n) | BigInt(lo);
  }
  bytes(n: number, field = "bytes"): Uint8Array {
    if (!Number.isInteger(n) || n < 0) throw new TpmFormatError(`${this.what}: bad length ${n} for ${field}`);
    this.need(n, field);
    const out = this.buf.slice(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  /** A TPM2B: u16 size then that many bytes; `max` rejects sizes the structure cannot legally have. */
  tpm2b(field = "TPM2B", max = 0xffff): Uint8Array {
    const n = this.u16(`${field}.size`);
    if (n > max) throw new TpmFormatError(`${this.what}: ${field} size ${n} exceeds limit ${max}`);
    return this.bytes(n, field);
  }
  /** A sub-reader over exactly n bytes (for sized structures like TPM2B_PUBLIC). */
  sub(n: number, field: string): Reader {
    return new Reader(this.bytes(n, field), `${this.what} ${field}`);
  }
  /** A list count, capped so a hostile count cannot make us loop or allocate for long. */
  count(field: string, max: number): number {
    const n = this.u32(`${field}.count`);
    if (n > max) throw new TpmFormatError(`${this.what}: ${field} count ${n} exceeds limit ${max}`);
    return n;
  }
  end(field = "structure"): void {
    if (this.remaining !== 0) throw new TpmFormatError(`${this.what}: ${this.remaining} unexpected trailing bytes after ${field}`);
  }
}

/** Appends big-endian fields; `finish()` returns the bytes. */
export class Writer {
  private buf = new Uint8Array(256);
  private len = 0;

  private grow(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }
  get length(): number { return this.len; }

  u8(v: number): this { this.grow(1); this.buf[this.len++] = v & 0xff; return this; }
  u16(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new RangeError(`u16 out of range: ${v}`);
    this.grow(2);
    this.buf[this.len++] = v >>> 8; this.buf[this.len++] = v & 0xff;
    return this;
  }
  u32(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`u32 out of range: ${v}`);
    this.grow(4);
    this.buf[this.len++] = v >>> 24; this.buf[this.len++] = (v >>> 16) & 0xff;
    this.buf[this.len++] = (v >>> 8) & 0xff; this.buf[this.len++] = v & 0xff;
    return this;
  }
  i32(v: number): this { return this.u32(v >>> 0); }
  bytes(b: Uint8Array): this { this.grow(b.length); this.buf.set(b, this.len); this.len += b.length; return this; }
  tpm2b(b: Uint8Array = new Uint8Array(0)): this {
    if (b.length > 0xffff) throw new RangeError(`TPM2B too large: ${b.length}`);
    return this.u16(b.length).bytes(b);
  }
  /** Writes a u16 size prefix followed by whatever `fill` writes (e.g. TPM2B_PUBLIC around a TPMT_PUBLIC). */
  sized(fill: (w: Writer) => void): this {
    const inner = new Writer();
    fill(inner);
    return this.tpm2b(inner.finish());
  }
  finish(): Uint8Array { return this.buf.slice(0, this.len); }
}

export const concat = (...parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
};

export const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
export const fromHex = (s: string): Uint8Array => {
  const clean = s.replace(/^0x/i, "");
  if (!/^([0-9a-f]{2})*$/i.test(clean)) throw new TpmFormatError(`not a hex string: ${s.slice(0, 40)}`);
  return new Uint8Array(Buffer.from(clean, "hex"));
};
