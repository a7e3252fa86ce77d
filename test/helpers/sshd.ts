// A real OpenSSH server on a loopback port, presenting a given host key and host certificate, for SSH CA tests.
import { join } from "node:path";
import { mkdirSync, writeFileSync, readFileSync, chmodSync } from "node:fs";
import type { Subprocess } from "bun";
import { freePort, waitForPort } from "./ports";

export interface Sshd {
  port: number;
  proc: Subprocess;
  /** Client private key authorised for root. */
  clientKey: string;
  stop(): Promise<void>;
  log(): string;
}

function run(cmd: string[]): void {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr.toString()}`);
}

/** Starts `sshd -D` on 127.0.0.1 with HostKey + HostCertificate; a fresh client key is authorised for root. */
export async function startSshd(workDir: string, hostKey: string, hostCert: string): Promise<Sshd> {
  mkdirSync(workDir, { recursive: true });
  mkdirSync("/run/sshd", { recursive: true, mode: 0o755 }); // sshd's privilege-separation directory
  const clientKey = join(workDir, "client_ed25519");
  run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", clientKey]);
  const authKeys = join(workDir, "authorized_keys");
  writeFileSync(authKeys, readFileSync(clientKey + ".pub"));
  chmodSync(authKeys, 0o600);
  const port = await freePort("127.0.0.1");
  const logFile = join(workDir, "sshd.log");
  const conf = join(workDir, "sshd_config");
  writeFileSync(conf, [
    "ListenAddress 127.0.0.1",
    `HostKey ${hostKey}`,
    `HostCertificate ${hostCert}`,
    `AuthorizedKeysFile ${authKeys}`,
    "PermitRootLogin prohibit-password",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "UsePAM no",
    "StrictModes no",
    `PidFile ${join(workDir, "sshd.pid")}`,
    "LogLevel VERBOSE",
    "",
  ].join("\n"));
  const proc = Bun.spawn(["/usr/sbin/sshd", "-D", "-e", "-f", conf, "-p", String(port), "-E", logFile], { stdout: "ignore", stderr: "ignore" });
  try {
    await waitForPort("127.0.0.1", port);
  } catch (e) {
    proc.kill("SIGKILL");
    throw new Error(`sshd did not start: ${(e as Error).message}; log: ${(() => { try { return readFileSync(logFile, "utf8"); } catch { return ""; } })()}`);
  }
  return {
    port, proc, clientKey,
    async stop() { proc.kill("SIGTERM"); await proc.exited; },
    log: () => { try { return readFileSync(logFile, "utf8"); } catch { return ""; } },
  };
}

/** Runs `ssh root@127.0.0.1 true` trusting only host certificates from `caPubLine`; returns exit code + stderr. */
export async function sshWithCa(sshd: Sshd, workDir: string, caPubLine: string, principal = "127.0.0.1"): Promise<{ code: number; err: string }> {
  const known = join(workDir, `known_hosts_${Math.random().toString(36).slice(2)}`);
  writeFileSync(known, `@cert-authority * ${caPubLine.trim()}\n`);
  const p = Bun.spawn(["ssh", "-F", "/dev/null", "-i", sshd.clientKey, "-p", String(sshd.port),
    "-o", `UserKnownHostsFile=${known}`, "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
    "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", `HostKeyAlias=${principal}`,
    `root@127.0.0.1`, "true"], { stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => p.kill("SIGKILL"), 20_000);
  const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
  clearTimeout(timer);
  return { code, err };
}
