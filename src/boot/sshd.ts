// The initramfs SSH side: fresh host keys every boot, and the debug sshd on port 2222 kept alive by a supervisor.
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "node:net";
import { selfCommand } from "../util/self";

export const HOST_KEY_TYPES = ["rsa", "ecdsa", "ed25519"] as const;

export interface SshdPaths {
  etcDir: string;        // /etc/ssh
  config: string;        // /etc/ssh/sshd_config.airroot
  authorizedKeys: string; // /etc/airroot/authorized_keys
  pidFile: string;       // /run/airroot/sshd-2222.pid
  privsepDir: string;    // /run/sshd (compiled into Debian's sshd)
}

export const DEFAULT_PATHS: SshdPaths = {
  etcDir: "/etc/ssh",
  config: "/etc/ssh/sshd_config.airroot",
  authorizedKeys: "/etc/airroot/authorized_keys",
  pidFile: "/run/airroot/sshd-2222.pid",
  privsepDir: "/run/sshd",
};

/**
 * Generates new host keys (rsa, ecdsa, ed25519) with ssh-keygen, replacing any old ones: a node never keeps host
 * keys across boots; its host certificate from the server is what makes the new keys trusted.
 */
export async function generateHostKeys(etcDir = "/etc/ssh", sshKeygen = "ssh-keygen"): Promise<string[]> {
  mkdirSync(etcDir, { recursive: true, mode: 0o755 });
  const jobs = HOST_KEY_TYPES.map(async (t) => {
    const key = join(etcDir, `ssh_host_${t}_key`);
    rmSync(key, { force: true });
    rmSync(`${key}.pub`, { force: true });
    const p = Bun.spawn([sshKeygen, "-q", "-t", t, "-N", "", "-C", `root@airroot-${t}`, "-f", key], { stdout: "pipe", stderr: "pipe" });
    if ((await p.exited) !== 0) throw new Error(`ssh-keygen -t ${t} failed: ${(await new Response(p.stderr).text()).trim()}`);
    return key;
  });
  return await Promise.all(jobs);
}

export interface SshdConfigOptions {
  port?: number;                 // default 2222
  hostKeys: string[];
  authorizedKeys: string;
  pidFile: string;
  sftpServer?: string;           // default /usr/lib/openssh/sftp-server
}

/** The sshd_config of the debug sshd: root by key only, no PAM (the initramfs has none). */
export function sshdConfig(o: SshdConfigOptions): string {
  const lines = [
    `# airroot debug sshd: runs in the initramfs environment, also after switch_root`,
    `Port ${o.port ?? 2222}`,
    ...o.hostKeys.map((k) => `HostKey ${k}`),
    ...o.hostKeys.filter((k) => existsSync(`${k}-cert.pub`)).map((k) => `HostCertificate ${k}-cert.pub`),
    `PermitRootLogin prohibit-password`,
    `PasswordAuthentication no`,
    `KbdInteractiveAuthentication no`,
    `UsePAM no`,
    `AuthorizedKeysFile ${o.authorizedKeys} .ssh/authorized_keys`,
    `PidFile ${o.pidFile}`,
    `PrintMotd no`,
    `Subsystem sftp ${o.sftpServer ?? "/usr/lib/openssh/sftp-server"}`,
    ``,
  ];
  return lines.join("\n");
}

/** Collects authorized keys for root from the site config (`/etc/airroot/site/authorized_keys`, `*.pub` in ssh/). */
export function writeAuthorizedKeys(dest: string, sources: string[]): number {
  const keys: string[] = [];
  for (const s of sources) {
    try {
      for (const line of readFileSync(s, "utf8").split("\n")) {
        const l = line.trim();
        if (/^(ssh-|ecdsa-|sk-)/.test(l) && l.length < 16384) keys.push(l);
      }
    } catch {}
  }
  mkdirSync(join(dest, ".."), { recursive: true });
  writeFileSync(dest, keys.map((k) => k + "\n").join(""), { mode: 0o600 });
  chmodSync(dest, 0o600);
  return keys.length;
}

export interface SupervisorOptions {
  sshd?: string;                 // default /usr/sbin/sshd (absolute: sshd re-executes itself)
  config: string;
  privsepDir?: string;
  maxBackoffMs?: number;         // default 30000
  /** Stop after this many starts (tests); default unlimited. */
  maxStarts?: number;
  log?: (line: string) => void;
}

/**
 * Runs sshd in the foreground and restarts it whenever it exits, with a growing delay (1 s .. 30 s) so a broken
 * config cannot spin. The privilege separation directory is recreated before each start: after switch_root the
 * initramfs /run is a fresh tmpfs.
 */
export async function superviseSshd(o: SupervisorOptions): Promise<void> {
  const sshd = o.sshd ?? "/usr/sbin/sshd";
  const log = o.log ?? ((l: string) => console.error(l));
  let backoff = 1000;
  for (let starts = 0; o.maxStarts === undefined || starts < o.maxStarts; starts++) {
    mkdirSync(o.privsepDir ?? "/run/sshd", { recursive: true, mode: 0o755 });
    const t0 = Date.now();
    const p = Bun.spawn([sshd, "-D", "-e", "-f", o.config], { stdin: "ignore", stdout: "inherit", stderr: "inherit" });
    const code = await p.exited;
    // A run that lasted a while was healthy: restart quickly. Quick deaths back off.
    backoff = Date.now() - t0 > 60_000 ? 1000 : Math.min(backoff * 2, o.maxBackoffMs ?? 30_000);
    log(`airroot: debug sshd exited (code ${code}); restarting in ${backoff / 1000} s`);
    await Bun.sleep(backoff);
  }
}

/** Checks the config with `sshd -t` so a broken setup fails the boot step with sshd's own message. */
export function testSshdConfig(config: string, sshd = "/usr/sbin/sshd", privsepDir = "/run/sshd"): void {
  mkdirSync(privsepDir, { recursive: true, mode: 0o755 });
  const r = Bun.spawnSync([sshd, "-t", "-f", config], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`sshd -t -f ${config}: ${r.stderr.toString().trim()}`);
}

/** Resolves once something accepts TCP connections on host:port, false after timeoutMs (bounded polling). */
export async function waitForListener(host: string, port: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host, port });
      const t = setTimeout(() => { s.destroy(); resolve(false); }, 1000);
      s.once("connect", () => { clearTimeout(t); s.destroy(); resolve(true); });
      s.once("error", () => { clearTimeout(t); resolve(false); });
    });
    if (ok) return true;
    await Bun.sleep(100);
  }
  return false;
}

/**
 * Starts the supervisor as its own long-lived process (this binary, subcommand `init keep-sshd`), named with a
 * leading '@' so systemd spares it at switch-root and shutdown like other root-storage daemons.
 */
export function startSshdSupervisor(config: string, logFile = "/run/airroot/sshd.log"): number {
  mkdirSync(join(logFile, ".."), { recursive: true });
  const fd = openSync(logFile, "a");
  try {
    const p = Bun.spawn([...selfCommand(), "init", "keep-sshd", "--config", config], {
      argv0: "@airroot-sshd",
      stdin: "ignore", stdout: fd, stderr: fd,
    });
    p.unref();
    return p.pid;
  } finally {
    closeSync(fd);
  }
}
