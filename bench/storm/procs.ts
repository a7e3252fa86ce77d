// Processes of the storm inside its namespaces: started with `ip netns exec` (which execs, so the pid is the
// program's own), waited for on TCP from inside the namespace, and their CPU time read from /proc.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { inNs } from "./net";

export interface NsProc { proc: Subprocess; name: string; kill(): void; stop(): Promise<void> }

export function startInNs(ns: string, name: string, cmd: string[], log: string): NsProc {
  const proc = Bun.spawn(inNs(ns, cmd), { stdout: Bun.file(log), stderr: Bun.file(`${log}.err`), stdin: "ignore" });
  return {
    proc, name,
    kill: () => proc.kill("SIGKILL"),
    async stop() { proc.kill("SIGTERM"); await Promise.race([proc.exited, Bun.sleep(10_000)]); proc.kill("SIGKILL"); await proc.exited; },
  };
}

/** Until something accepts TCP at host:port inside `ns` (nc -z), bounded. */
export async function waitTcpInNs(ns: string, host: string, port: number, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (Bun.spawnSync(inNs(ns, ["nc", "-z", "-w", "1", host, String(port)]), { timeout: 5000 }).exitCode === 0) return;
    await Bun.sleep(200);
  }
  throw new Error(`${what} did not accept connections on ${host}:${port} within ${timeoutMs / 1000} s`);
}

/** user+system CPU seconds of a process and its reaped children so far; NaN once it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
    return (Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14])) / 100;
  } catch { return NaN; }
}

/** Children pids of a process (nginx's workers). */
export function childPids(pid: number): number[] {
  try { return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number); } catch { return []; }
}

/** Log format of the mirrors: completion time, status, body bytes, Range. */
export const MIRROR_LOG_FORMAT = `log_format storm '$msec $status $body_bytes_sent "$request" "$http_range"';`;

/**
 * nginx in `ns` running `site` (a generated mirror config), logging each request into workDir/access.log. The
 * log goes into the server block: the main config's http-level `access_log off` would cancel one at that level.
 */
export function startNginxInNs(ns: string, name: string, workDir: string, site: string): NsProc & { accessLog: string } {
  mkdirSync(join(workDir, "logs"), { recursive: true });
  const accessLog = join(workDir, "access.log");
  const siteFile = join(workDir, "site.conf"), conf = join(workDir, "nginx.conf");
  if (!/server\s*\{/.test(site)) throw new Error("mirror config has no server block");
  writeFileSync(siteFile, `${MIRROR_LOG_FORMAT}\n${site.replace(/server\s*\{/, `server {\n  access_log ${accessLog} storm;`)}`);
  writeFileSync(conf, `worker_processes 1;
pid ${workDir}/nginx.pid;
error_log ${workDir}/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${workDir}/body;
  proxy_temp_path ${workDir}/proxy;
  include ${siteFile};
}
`);
  const check = Bun.spawnSync(inNs(ns, ["nginx", "-p", workDir, "-c", conf, "-t"]), { stdout: "pipe", stderr: "pipe" });
  if (check.exitCode !== 0) throw new Error(`nginx -t failed: ${check.stderr.toString()}`);
  const p = startInNs(ns, name, ["nginx", "-p", workDir, "-c", conf, "-g", "daemon off;"], join(workDir, "nginx.out"));
  // Workers outlive a SIGKILLed master: kill them first (a crash takes the whole server down).
  const kill = () => { for (const c of childPids(p.proc.pid)) { try { process.kill(c, "SIGKILL"); } catch {} } p.proc.kill("SIGKILL"); };
  return { ...p, accessLog, kill, async stop() { const kids = childPids(p.proc.pid); await p.stop(); for (const c of kids) { try { process.kill(c, "SIGKILL"); } catch {} } } };
}

export interface MirrorLine { msec: number; status: number; bytes: number }

export function readMirrorLog(path: string): MirrorLine[] {
  let text = "";
  try { text = readFileSync(path, "utf8"); } catch { return []; }
  const out: MirrorLine[] = [];
  for (const l of text.split("\n")) {
    const m = /^(\d+\.\d+) (\d{3}) (\d+) /.exec(l);
    if (m) out.push({ msec: Number(m[1]) * 1000, status: Number(m[2]), bytes: Number(m[3]) });
  }
  return out;
}
