// Pieces for e2e tests that boot a node VM: the machine-wide QEMU lock (one VM at a time on this 2-core machine),
// swtpm as the guest's TPM on a unix socket, and ssh into the booted node with its host certificate checked
// against the site's SSH CA.
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";

/** One guest at a time per lock; `make test` gives each of its two VM lanes its own (scripts/test.ts). */
export const QEMU_LOCK = process.env.AIRROOT_QEMU_LOCK || "/tmp/airroot-qemu.lock";

/**
 * Waits (bounded) for the machine-wide QEMU lock and holds it until release() (or until this process exits: the
 * holder is a child whose stdin is ours, so it ends with us).
 */
export async function qemuLock(timeoutMs = 900_000): Promise<{ release(): Promise<void> }> {
  const p = Bun.spawn(["flock", "-w", String(Math.ceil(timeoutMs / 1000)), QEMU_LOCK, "sh", "-c", "echo locked; exec cat >/dev/null"],
    { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
  const reader = p.stdout.getReader();
  const first = await Promise.race([reader.read(), p.exited.then(() => ({ done: true, value: undefined }))]);
  reader.releaseLock();
  if (first.done || !new TextDecoder().decode(first.value).includes("locked")) {
    p.kill("SIGKILL");
    throw new Error(`could not take ${QEMU_LOCK} within ${timeoutMs / 1000} s (another VM test holds it)`);
  }
  return {
    async release() {
      try { p.stdin.end(); } catch {}
      await Promise.race([p.exited, Bun.sleep(3000)]);
      p.kill("SIGKILL");
      await p.exited;
    },
  };
}

/** swtpm for a guest on a unix control socket; the state dir is the TPM (the same dir across boots: the same TPM). */
export async function startQemuTpm(dir: string): Promise<{ sock: string; proc: Subprocess; stop(): Promise<void> }> {
  const tdir = join(dir, "tpm");
  mkdirSync(tdir, { recursive: true });
  const sock = join(dir, "tpm.sock");
  rmSync(sock, { force: true });
  const proc = Bun.spawn(["swtpm", "socket", "--tpm2", "--tpmstate", `dir=${tdir}`, "--ctrl", `type=unixio,path=${sock}`, "--terminate"],
    { stdout: "ignore", stderr: "ignore" });
  for (let i = 0; i < 50 && !existsSync(sock); i++) await Bun.sleep(100);
  if (!existsSync(sock)) { proc.kill("SIGKILL"); throw new Error("swtpm did not create its control socket within 5 s"); }
  return {
    sock, proc,
    async stop() { proc.kill("SIGTERM"); await Promise.race([proc.exited, Bun.sleep(3000)]); proc.kill("SIGKILL"); await proc.exited; },
  };
}

/** QEMU arguments for that TPM. */
export const tpmArgs = (sock: string) => ["-chardev", `socket,id=chrtpm,path=${sock}`, "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0"];

/**
 * ssh as root into a node through a forwarded loopback port, its host certificate checked against the SSH CA
 * (StrictHostKeyChecking=yes, nothing else trusted) for the principal `alias`; bounded in time.
 */
export function certifiedSsh(dir: string, sshCaPub: string, key: string, alias: string) {
  const knownHosts = join(dir, `known_hosts-${alias}`);
  writeFileSync(knownHosts, `@cert-authority * ${sshCaPub.trim()}\n`);
  return async (port: number, cmd: string, timeoutMs = 60_000) => {
    const s = Bun.spawn(["ssh", "-p", String(port), "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
      "-o", `UserKnownHostsFile=${knownHosts}`, "-o", "GlobalKnownHostsFile=/dev/null", "-o", `HostKeyAlias=${alias}`, "-o", "CheckHostIP=no",
      "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "root@127.0.0.1", cmd], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    const t = setTimeout(() => s.kill("SIGKILL"), timeoutMs);
    try {
      const [out, err, code] = await Promise.all([new Response(s.stdout).text(), new Response(s.stderr).text(), s.exited]);
      return { out, err, code };
    } finally { clearTimeout(t); }
  };
}

/** A VM's console collected into a box (CRs dropped), stdout and stderr. */
export function collectConsole(vm: Subprocess<"pipe" | "ignore", "pipe", "pipe">): { out: string } {
  const box = { out: "" };
  (async () => { const d = new TextDecoder(); for await (const c of vm.stdout) box.out += d.decode(c, { stream: true }).replace(/\r/g, ""); })();
  (async () => { const d = new TextDecoder(); for await (const c of vm.stderr) box.out += d.decode(c, { stream: true }); })();
  return box;
}
