// Real lighttpd on loopback running a site config given as text (e.g. a generated mirror config), like nginx-site.ts.
// The main config binds the one loopback address the site's $SERVER["socket"] block names, so lighttpd's default
// listener (port 80 on every address) is never opened.
import { join } from "node:path";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import type { Subprocess } from "bun";
import { waitForPort } from "./ports";
import { stopProcess } from "./stop";

export interface Lighttpd {
  proc: Subprocess;
  errorLog(): string;
  stop(): Promise<void>;
}

/**
 * Wraps `siteConfig` (server.modules += ..., $SERVER["socket"] blocks) in a minimal main config listening on `listen`
 * (which must be a loopback address the site also names), checks it with `lighttpd -tt` and runs it in the foreground.
 */
export async function startLighttpd(opts: { workDir: string; siteConfig: string; listen: { host: string; port: number } }): Promise<Lighttpd> {
  const { host, port } = opts.listen;
  if (!/^127\.|^\[?::1\]?$/.test(host)) throw new Error(`startLighttpd: ${host} is not a loopback address`);
  mkdirSync(join(opts.workDir, "empty"), { recursive: true });
  const site = join(opts.workDir, "site.conf");
  writeFileSync(site, opts.siteConfig);
  const errorLog = join(opts.workDir, "error.log");
  const conf = join(opts.workDir, "lighttpd.conf");
  writeFileSync(conf, `server.document-root = "${opts.workDir}/empty"
server.bind = "${host.replace(/^\[|\]$/g, "")}"
server.port = ${port}
server.pid-file = "${opts.workDir}/lighttpd.pid"
server.errorlog = "${errorLog}"
include "${site}"
`);
  const check = Bun.spawnSync(["lighttpd", "-tt", "-f", conf], { stdout: "pipe", stderr: "pipe" });
  if (check.exitCode !== 0) throw new Error(`lighttpd -tt failed: ${check.stderr.toString()}${check.stdout.toString()}`);
  const proc = Bun.spawn(["lighttpd", "-D", "-f", conf], { stdout: "ignore", stderr: "pipe" });
  try {
    await waitForPort(host.replace(/^\[|\]$/g, ""), port);
  } catch (e) {
    proc.kill("SIGKILL");
    throw new Error(`lighttpd did not start: ${(e as Error).message}\n${existsSync(errorLog) ? readFileSync(errorLog, "utf8") : ""}`);
  }
  return {
    proc,
    errorLog: () => (existsSync(errorLog) ? readFileSync(errorLog, "utf8") : ""),
    stop: () => stopProcess(proc),
  };
}
