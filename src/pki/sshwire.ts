// The SSH wire encoding (RFC 4251 §5): a bounds-checked reader and a writer for uint32, uint64, string and mpint.

export class SshFormatError extends Error {
  constructor(msg: string) { super(msg); this.name = "SshFormatError"; }
}

export class SshWriter {
  private parts: Uint8Array[] = [];
  u32(n: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, n >>> 0);
    this.parts.push(b);
    return this;
  }
  u64(n: bigint): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, n));
    this.parts.push(b);
    return this;
  }
  string(s: string | Uint8Array): this {
    const b = typeof s === "string" ? new TextEncoder().encode(s) : s;
    this.u32(b.length);
    this.parts.push(b);
    return this;
  }
  raw(b: Uint8Array): this { this.parts.push(b); return this; }
  bytes(): Uint8Array {
    return new Uint8Array(Buffer.concat(this.parts));
  }
}

export class SshReader {
  private off = 0;
  constructor(private readonly buf: Uint8Array, private readonly what = "SSH data") {}
  private need(n: number): void {
    if (this.off + n > this.buf.length) throw new SshFormatError(`${this.what}: truncated at byte ${this.off} (needs ${n} more)`);
  }
  u32(): number {
    this.need(4);
    const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.off, 4).getUint32(0);
    this.off += 4;
    return v;
  }
  u64(): bigint {
    this.need(8);
    const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.off, 8).getBigUint64(0);
    this.off += 8;
    return v;
  }
  bytes(): Uint8Array {
    const n = this.u32();
    this.need(n);
    const v = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return v;
  }
  /** A string that must be printable ASCII (names, types). */
  text(max = 256): string {
    const b = this.bytes();
    if (b.length > max) throw new SshFormatError(`${this.what}: name longer than ${max} bytes`);
    for (const c of b) if (c < 0x20 || c > 0x7e) throw new SshFormatError(`${this.what}: non-printable byte in a name`);
    return new TextDecoder().decode(b);
  }
  get done(): boolean { return this.off === this.buf.length; }
  get offset(): number { return this.off; }
  end(): void {
    if (!this.done) throw new SshFormatError(`${this.what}: ${this.buf.length - this.off} unexpected trailing bytes`);
  }
}
