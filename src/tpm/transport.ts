// Byte transports to a TPM: the Linux character device or swtpm's raw TCP command channel.
import { open, type FileHandle } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { TpmFormatError } from "./marshal";

/** The TPM could not be reached, went silent, or hung up. */
export class TpmTransportError extends Error {
  override name = "TpmTransportError";
}

export interface TpmTransport {
  readonly description: string;
  /** Sends one whole command and resolves with one whole response (header checked for size only). */
  send(command: Uint8Array): Promise<Uint8Array>;
  close(): Promise<void>;
}

export interface TransportOptions {
  /** How long one command may take before we give up (key generation on slow TPMs takes seconds). */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 60_000;
/** Largest response we accept; real TPMs stay far below (TPM_PT_MAX_RESPONSE_SIZE is typically 4 KiB). */
export const MAX_RESPONSE = 64 * 1024;
export const DEFAULT_DEVICES = ["/dev/tpmrm0", "/dev/tpm0"];

export type TpmSpec = { kind: "device"; paths: string[] } | { kind: "swtpm"; host: string; port: number };

/** Parses `device`, `device:/dev/tpmrm0` or `swtpm:HOST:PORT` (HOST may be a bracketed IPv6 address). */
export function parseTpmSpec(spec: string): TpmSpec {
  if (spec === "device" || spec === "") return { kind: "device", paths: DEFAULT_DEVICES };
  if (spec.startsWith("device:")) {
    const path = spec.slice("device:".length);
    if (!path.startsWith("/")) throw new TpmTransportError(`--tpm ${spec}: the device path must be absolute, e.g. device:/dev/tpmrm0`);
    return { kind: "device", paths: [path] };
  }
  const m = /^swtpm:(?:\[([0-9a-fA-F:.]+)\]|([^:]+)):(\d{1,5})$/.exec(spec);
  if (m) {
    const port = Number(m[3]);
    if (port < 1 || port > 65535) throw new TpmTransportError(`--tpm ${spec}: port out of range`);
    return { kind: "swtpm", host: m[1] ?? m[2], port };
  }
  throw new TpmTransportError(`--tpm ${JSON.stringify(spec)}: expected device, device:/dev/tpmrm0 or swtpm:HOST:PORT`);
}

export async function openTransport(spec: string | TpmSpec, opts: TransportOptions = {}): Promise<TpmTransport> {
  const s = typeof spec === "string" ? parseTpmSpec(spec) : spec;
  return s.kind === "device" ? await DeviceTransport.open(s.paths, opts) : await SwtpmTransport.connect(s.host, s.port, opts);
}

/** Checks a response header and returns its declared size; throws on nonsense sizes. */
export function responseSize(header: Uint8Array): number {
  const size = ((header[2] << 24) >>> 0) + (header[3] << 16) + (header[4] << 8) + header[5];
  if (size < 10 || size > MAX_RESPONSE) throw new TpmFormatError(`TPM response header declares size ${size} (allowed 10..${MAX_RESPONSE})`);
  return size;
}

/** Runs one job at a time: a TPM takes exactly one command at a time per connection. */
class Serial {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(job: () => Promise<T>): Promise<T> {
    const p = this.tail.then(job, job);
    this.tail = p.catch(() => undefined);
    return p;
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string, onTimeout: () => void): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => { onTimeout(); reject(new TpmTransportError(`${what}: no response within ${ms} ms; the TPM is silent or busy`)); }, ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** /dev/tpmrm0 (kernel resource manager) or /dev/tpm0: write a command, read the response in one read. */
export class DeviceTransport implements TpmTransport {
  private serial = new Serial();
  private broken?: string;
  private constructor(private fh: FileHandle, readonly description: string, private timeoutMs: number) {}

  static async open(paths: string[], opts: TransportOptions = {}): Promise<DeviceTransport> {
    const errors: string[] = [];
    for (const path of paths) {
      try {
        const fh = await open(path, "r+");
        return new DeviceTransport(fh, `device:${path}`, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        errors.push(`${path}: ${code === "ENOENT" ? "does not exist" : code === "EBUSY" ? "busy (another process holds /dev/tpm0; use /dev/tpmrm0)" : (e as Error).message}`);
      }
    }
    throw new TpmTransportError(`no TPM: could not open ${errors.join("; ")}. Is there a TPM 2.0 (tpm_tis/tpm_crb driver, firmware TPM enabled)? For tests use --tpm swtpm:HOST:PORT`);
  }

  send(command: Uint8Array): Promise<Uint8Array> {
    return this.serial.run(async () => {
      if (this.broken) throw new TpmTransportError(`${this.description}: unusable after an earlier failure (${this.broken})`);
      const io = (async () => {
        await this.fh.write(command, 0, command.length, null);
        const buf = new Uint8Array(MAX_RESPONSE);
        const { bytesRead } = await this.fh.read(buf, 0, buf.length, null);
        if (bytesRead < 10) throw new TpmFormatError(`${this.description}: short response (${bytesRead} bytes)`);
        const size = responseSize(buf);
        if (size !== bytesRead) throw new TpmFormatError(`${this.description}: response header says ${size} bytes, read ${bytesRead}`);
        return buf.slice(0, bytesRead);
      })();
      try {
        return await withTimeout(io, this.timeoutMs, this.description, () => { this.broken = "timeout"; });
      } catch (e) {
        // A read may still be pending in the thread pool; do not reuse the fd for another command.
        this.broken ??= (e as Error).message;
        throw e instanceof TpmFormatError || e instanceof TpmTransportError ? e : new TpmTransportError(`${this.description}: ${(e as Error).message}`);
      }
    });
  }

  async close(): Promise<void> {
    // A read stuck in the thread pool would keep close() waiting forever; don't await it after a timeout.
    if (this.broken === "timeout") { void this.fh.close().catch(() => undefined); return; }
    await this.fh.close().catch(() => undefined);
  }
}

/** swtpm's `--server type=tcp` channel: raw TPM commands and responses, no framing. */
export class SwtpmTransport implements TpmTransport {
  private serial = new Serial();
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter?: () => void;
  private failure?: TpmTransportError;

  private constructor(private sock: Socket, readonly description: string, private timeoutMs: number) {
    sock.on("data", (d: Buffer) => { this.chunks.push(d); this.buffered += d.length; this.waiter?.(); });
    const fail = (why: string) => { this.failure ??= new TpmTransportError(`${description}: ${why}`); this.waiter?.(); };
    sock.on("error", (e) => fail(e.message));
    sock.on("close", () => fail("connection closed by the TPM simulator"));
  }

  static connect(host: string, port: number, opts: TransportOptions = {}): Promise<SwtpmTransport> {
    const description = `swtpm:${host.includes(":") ? `[${host}]` : host}:${port}`;
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const sock = connect({ host, port });
      const timer = setTimeout(() => { sock.destroy(); reject(new TpmTransportError(`${description}: connect timed out after ${timeoutMs} ms`)); }, timeoutMs);
      sock.once("connect", () => { clearTimeout(timer); sock.setNoDelay(true); resolve(new SwtpmTransport(sock, description, timeoutMs)); });
      sock.once("error", (e) => { clearTimeout(timer); reject(new TpmTransportError(`no TPM: cannot connect to ${description}: ${e.message}. Is swtpm running with --server type=tcp,port=${port}?`)); });
    });
  }

  private take(n: number): Uint8Array {
    const all = Buffer.concat(this.chunks);
    this.chunks = all.length > n ? [all.subarray(n)] : [];
    this.buffered = all.length - n;
    return new Uint8Array(all.subarray(0, n));
  }

  private async waitFor(n: number): Promise<void> {
    while (this.buffered < n) {
      if (this.failure) throw this.failure;
      await new Promise<void>((r) => { this.waiter = r; });
      this.waiter = undefined;
    }
  }

  send(command: Uint8Array): Promise<Uint8Array> {
    return this.serial.run(async () => {
      if (this.failure) throw this.failure;
      if (this.buffered) this.take(this.buffered); // stale bytes from a timed-out command
      this.sock.write(command);
      const io = (async () => {
        await this.waitFor(10);
        const size = responseSize(new Uint8Array(Buffer.concat(this.chunks).subarray(0, 10)));
        await this.waitFor(size);
        return this.take(size);
      })();
      try {
        return await withTimeout(io, this.timeoutMs, this.description, () => {
          this.failure ??= new TpmTransportError(`${this.description}: timed out earlier`);
          this.waiter?.();
        });
      } catch (e) {
        if (e instanceof TpmFormatError) { this.failure ??= new TpmTransportError(`${this.description}: out of sync after a bad response`); this.sock.destroy(); }
        throw e;
      }
    });
  }

  async close(): Promise<void> {
    this.failure ??= new TpmTransportError(`${this.description}: closed`);
    if (!this.sock.destroyed && !this.sock.closed) {
      await new Promise<void>((r) => {
        const timer = setTimeout(r, 1000); // a peer that never acknowledges must not hold us up
        this.sock.once("close", () => { clearTimeout(timer); r(); });
        this.sock.end();
      });
    }
    this.sock.destroy();
  }
}
