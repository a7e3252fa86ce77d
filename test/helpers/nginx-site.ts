// Real nginx on loopback running a complete server {} block given as text (e.g. a generated mirror config).
import { join } from "node:path";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import type { Subprocess } from "bun";
import { waitForPort } from "./ports";
import { stopProcess } from "./stop";

export interface NginxSite {
  proc: Subprocess;
  errorLog(): string;
  stop(): Promise<void>;
}

/** Wraps `siteConfig` (server blocks for the http {} context) in a minimal main config and runs nginx in the foreground. */
export async function startNginxSite(opts: { workDir: string; siteConfig: string; waitFor: { host: string; port: number }[] }): Promise<NginxSite> {
  mkdirSync(join(opts.workDir, "logs"), { recursive: true });
  const site = join(opts.workDir, "site.conf");
  writeFileSync(site, opts.siteConfig);
  const errorLog = join(opts.workDir, "logs/error.log");
  const conf = join(opts.workDir, "nginx.conf");
  writeFileSync(conf, `worker_processes 1;
pid ${opts.workDir}/nginx.pid;
error_log ${errorLog} warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${opts.workDir}/body;
  proxy_temp_path ${opts.workDir}/proxy;
  include ${site};
}
`);
  const check = Bun.spawnSync(["nginx", "-p", opts.workDir, "-c", conf, "-t"], { stdout: "pipe", stderr: "pipe" });
  if (check.exitCode !== 0) throw new Error(`nginx -t failed: ${check.stderr.toString()}`);
  const proc = Bun.spawn(["nginx", "-p", opts.workDir, "-c", conf, "-g", "daemon off;"], { stdout: "ignore", stderr: "pipe" });
  try {
    for (const a of opts.waitFor) await waitForPort(a.host, a.port);
  } catch (e) {
    proc.kill("SIGKILL");
    throw new Error(`nginx did not start: ${(e as Error).message}\n${existsSync(errorLog) ? readFileSync(errorLog, "utf8") : ""}`);
  }
  return {
    proc,
    errorLog: () => (existsSync(errorLog) ? readFileSync(errorLog, "utf8") : ""),
    stop: () => stopProcess(proc),
  };
}
