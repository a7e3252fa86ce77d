// A QEMU (TCG) guest for boot tests and benchmarks: serial console captured, user networking with restrict=on (the
// guest reaches nothing but what guestfwd forwards to loopback), host ports forwarded only on 127.0.0.1.
import type { Subprocess } from "bun";

export interface VmOptions {
  kernel: string;
  initrd: string;
  /** Kernel command line. */
  append: string;
  memoryMiB?: number;      // default 1024
  /** Guest address:port -> loopback port on the host, one nc per guest connection (see lab-facts). */
  guestfwd?: { guest: string; hostPort: number }[];
  /** Guest TCP port -> host port on 127.0.0.1. */
  hostfwd?: { guestPort: number; hostPort: number }[];
  /** Extra ",key=value" text for -netdev user (prebuilt hostfwd/guestfwd lists). */
  netdevExtra?: string;
  /** More QEMU arguments (disks, devices). */
  extraArgs?: string[];
}

export interface Vm {
  /** Everything the serial console printed so far, without CRs (stderr of QEMU included). */
  output(): string;
  /** Waits until the console output matches; throws with the console so far on timeout or VM exit. */
  waitFor(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  /** Types on the serial console. */
  type(text: string): void;
  /** Milliseconds since QEMU was started. */
  elapsedMs(): number;
  exited: Promise<number>;
  proc: Subprocess;
  kill(): void;
}

export function qemuArgs(o: VmOptions): string[] {
  const fwd = [
    ...(o.hostfwd ?? []).map((f) => `,hostfwd=tcp:127.0.0.1:${f.hostPort}-:${f.guestPort}`),
    ...(o.guestfwd ?? []).map((f) => {
      const [ip, port = "443"] = f.guest.split(":");
      return `,guestfwd=tcp:${ip}:${port}-cmd:nc 127.0.0.1 ${f.hostPort}`;
    }),
  ].join("") + (o.netdevExtra ?? "");
  return ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", String(o.memoryMiB ?? 1024), "-smp", "1", "-nographic",
    "-no-reboot", "-kernel", o.kernel, "-initrd", o.initrd, "-append", o.append,
    "-netdev", `user,id=n0,restrict=on${fwd}`, "-device", "virtio-net-pci,netdev=n0", ...(o.extraArgs ?? [])];
}

export function startVm(o: VmOptions): Vm {
  const t0 = performance.now();
  const proc = Bun.spawn(qemuArgs(o), { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
  let out = "";
  let done = false;
  const exited = proc.exited.then((c) => { done = true; return c; });
  (async () => {
    const dec = new TextDecoder();
    for await (const chunk of proc.stdout) out += dec.decode(chunk, { stream: true }).replace(/\r/g, "");
  })();
  (async () => { const dec = new TextDecoder(); for await (const chunk of proc.stderr) out += dec.decode(chunk, { stream: true }); })();
  return {
    proc, exited,
    output: () => out,
    elapsedMs: () => performance.now() - t0,
    async waitFor(re, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const m = out.match(re);
        if (m) return m;
        if (done) throw new Error(`VM exited before ${re}; console:\n${out}`);
        if (Date.now() > deadline) throw new Error(`timeout waiting for ${re}; console:\n${out}`);
        await Bun.sleep(50);
      }
    },
    type(text) { proc.stdin.write(text); proc.stdin.flush(); },
    kill() { proc.kill("SIGKILL"); },
  };
}

/** ssh into the guest through a forwarded loopback port with a key; bounded in time, never asks anything. */
export async function sshGuest(port: number, key: string, cmd: string, timeoutMs = 60_000): Promise<{ out: string; err: string; code: number }> {
  const s = Bun.spawn(["ssh", "-p", String(port), "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "root@127.0.0.1", cmd],
  { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const t = setTimeout(() => s.kill("SIGKILL"), timeoutMs);
  try {
    const [out, err, code] = await Promise.all([new Response(s.stdout).text(), new Response(s.stderr).text(), s.exited]);
    return { out, err, code };
  } finally { clearTimeout(t); }
}

/** The Mem: row of `free -m` (MiB). */
export interface FreeMem { total: number; used: number; free: number; shared: number; buffCache: number; available: number }

/** Parses `free -m` output from a guest (whole lines only); throws naming what it got when there is no complete Mem: row. */
export function parseFreeMem(out: string): FreeMem {
  const m = out.match(/^Mem:[ \t]+(\d+)[ \t]+(\d+)[ \t]+(\d+)[ \t]+(\d+)[ \t]+(\d+)[ \t]+(\d+)[ \t]*\n/m);
  if (!m) throw new Error(`free -m printed no complete Mem: row: ${JSON.stringify(out.slice(0, 300))}`);
  const [total, used, free, shared, buffCache, available] = m.slice(1).map(Number);
  return { total, used, free, shared, buffCache, available };
}
