// Real Caddy on loopback running a complete Caddyfile given as text (e.g. a generated mirror config). Caddy must not
// touch the network beyond its site: the Caddyfile has to turn the admin endpoint and automatic HTTPS off (no ACME,
// no :80 redirect listener) and bind every site to a loopback address; this helper refuses one that does not. Its
// state (autosave.json, data dir) goes under workDir, not the invoking user's home.
import { join } from "node:path";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import type { Subprocess } from "bun";
import { waitForPort } from "./ports";
import { stopProcess } from "./stop";

export interface Caddy {
  proc: Subprocess;
  log(): string;
  stop(): Promise<void>;
}

export async function startCaddy(opts: { workDir: string; caddyfile: string; waitFor: { host: string; port: number }[] }): Promise<Caddy> {
  const text = opts.caddyfile;
  if (!/^\s*admin off\b/m.test(text) || !/^\s*auto_https off\b/m.test(text)) throw new Error("startCaddy: the Caddyfile must say `admin off` and `auto_https off`");
  const sites = text.match(/^https?:\/\/\S*\s*\{[^]*?^\}/gm) ?? [];
  if (!sites.length) throw new Error("startCaddy: no site block");
  for (const s of sites) {
    const bind = /^\s*bind\s+(.+)$/m.exec(s)?.[1].trim().split(/\s+/) ?? [];
    if (!bind.length || !bind.every((a) => /^127\.|^\[?::1\]?$/.test(a))) throw new Error(`startCaddy: site ${s.split("\n")[0]} must bind loopback addresses only`);
  }
  const home = join(opts.workDir, "home");
  mkdirSync(home, { recursive: true });
  const file = join(opts.workDir, "Caddyfile");
  writeFileSync(file, text);
  const env = { PATH: process.env.PATH ?? "", HOME: home, XDG_CONFIG_HOME: join(home, "config"), XDG_DATA_HOME: join(home, "data") };
  const check = Bun.spawnSync(["caddy", "validate", "--config", file, "--adapter", "caddyfile"], { stdout: "pipe", stderr: "pipe", env });
  if (check.exitCode !== 0) throw new Error(`caddy validate failed: ${check.stderr.toString()}${check.stdout.toString()}`);
  const logFile = join(opts.workDir, "caddy.log");
  const proc = Bun.spawn(["caddy", "run", "--config", file, "--adapter", "caddyfile"], { stdout: Bun.file(logFile), stderr: Bun.file(`${logFile}.err`), env });
  const log = () => [logFile, `${logFile}.err`].map((f) => (existsSync(f) ? readFileSync(f, "utf8") : "")).join("");
  try {
    for (const a of opts.waitFor) await waitForPort(a.host, a.port);
  } catch (e) {
    proc.kill("SIGKILL");
    throw new Error(`caddy did not start: ${(e as Error).message}\n${log()}`);
  }
  return {
    proc, log,
    stop: () => stopProcess(proc),
  };
}
