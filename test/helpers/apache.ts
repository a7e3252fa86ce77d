// Real Apache httpd instances on loopback (Debian's apache2 binary, TLS via mod_ssl) with a generated main config.
import { join } from "node:path";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import type { Subprocess } from "bun";
import { waitForPort } from "./ports";
import { stopProcess } from "./stop";

const MODULES = "/usr/lib/apache2/modules";
/** Modules a TLS static-file site needs; unixd and log_config are compiled into Debian's binary. */
const DEFAULT_MODULES = ["mpm_event", "authz_core", "authz_host", "alias", "mime", "headers", "env", "setenvif",
  "socache_shmcb", "ssl", "dir"];

export interface ApacheOptions {
  workDir: string;            // config, pid, logs and runtime files go here
  siteConfig: string;         // text included after the main config (VirtualHosts, Listen lines, ...)
  waitFor: { host: string; port: number }[]; // addresses the site listens on (the helper waits for them)
  user?: string;              // worker user; Apache refuses to serve as root (default www-data: files must be readable)
  modules?: string[];
}

export interface Apache {
  proc: Subprocess;
  errorLog(): string;
  stop(): Promise<void>;
}

export async function startApache(opts: ApacheOptions): Promise<Apache> {
  mkdirSync(opts.workDir, { recursive: true });
  const user = opts.user ?? "www-data";
  const mods = (opts.modules ?? DEFAULT_MODULES)
    .map((m) => `LoadModule ${m}_module ${MODULES}/mod_${m}.so`).join("\n");
  const site = join(opts.workDir, "site.conf");
  writeFileSync(site, opts.siteConfig);
  const conf = join(opts.workDir, "httpd.conf");
  const errorLog = join(opts.workDir, "error.log");
  writeFileSync(conf, `${mods}
ServerRoot ${opts.workDir}
ServerName localhost
DefaultRuntimeDir ${opts.workDir}
PidFile ${opts.workDir}/httpd.pid
ErrorLog ${errorLog}
LogLevel warn
User ${user}
Group ${user}
TypesConfig /etc/mime.types
StartServers 1
ServerLimit 1
ThreadsPerChild 16
MaxRequestWorkers 16
<Directory />
    AllowOverride None
    Require all denied
</Directory>
Include ${site}
`);
  const check = Bun.spawnSync(["apache2", "-f", conf, "-t"], { stdout: "pipe", stderr: "pipe", env: { PATH: process.env.PATH ?? "" } });
  if (check.exitCode !== 0) throw new Error(`apache2 config test failed: ${check.stderr.toString()}${check.stdout.toString()}`);
  // Foreground without -X: -X skips the MPM's child setup in ways that differ from production; DFOREGROUND keeps
  // the normal parent/child model but lets us own the parent process.
  const proc = Bun.spawn(["apache2", "-f", conf, "-DFOREGROUND"], {
    stdout: "ignore", stderr: "pipe", env: { PATH: process.env.PATH ?? "", LANG: "C" },
  });
  try {
    for (const a of opts.waitFor) await waitForPort(a.host, a.port);
  } catch (e) {
    proc.kill("SIGKILL");
    const log = existsSync(errorLog) ? readFileSync(errorLog, "utf8") : "";
    throw new Error(`apache2 did not start: ${(e as Error).message}\n${log}`);
  }
  return {
    proc,
    errorLog: () => (existsSync(errorLog) ? readFileSync(errorLog, "utf8") : ""),
    stop: () => stopProcess(proc),
  };
}
