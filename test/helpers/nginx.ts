// Real nginx instances on loopback serving a directory over HTTPS, for image-server tests.
import { join } from "node:path";
import { mkdirSync, writeFileSync } from "node:fs";
import type { Subprocess } from "bun";
import { waitForPort } from "./ports";

export interface NginxOptions {
  root: string;              // directory served at /
  listen: { host: string; port: number }[]; // host: "127.0.0.2" or "::1"
  cert: string;
  key: string;
  extra?: string;            // extra directives inside server {}
  workDir: string;
  /** Plain-HTTP listeners: a second server {} with the same root (benchmarks of clients without TLS). */
  plain?: { listen: { host: string; port: number }[]; extra?: string };
}

export interface Nginx {
  urlFor(path: string, listenIndex?: number): string;
  stop(): Promise<void>;
  kill(): void;              // abrupt death, like a server crash
  proc: Subprocess;
  opts: NginxOptions;
}

const hostInUrl = (h: string) => (h.includes(":") ? `[${h}]` : h);

export async function startNginx(opts: NginxOptions): Promise<Nginx> {
  mkdirSync(join(opts.workDir, "logs"), { recursive: true });
  const listens = opts.listen.map((l) => `    listen ${hostInUrl(l.host)}:${l.port} ssl;`).join("\n");
  const conf = `
user root;
worker_processes 1;
pid ${opts.workDir}/nginx.pid;
error_log ${opts.workDir}/logs/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 100000;
  server {
${listens}
    ssl_certificate ${opts.cert};
    ssl_certificate_key ${opts.key};
    root ${opts.root};
    ${opts.extra ?? ""}
  }
${opts.plain ? `  server {
${opts.plain.listen.map((l) => `    listen ${hostInUrl(l.host)}:${l.port};`).join("\n")}
    root ${opts.root};
    ${opts.plain.extra ?? ""}
  }` : ""}
}
`;
  const confPath = join(opts.workDir, "nginx.conf");
  writeFileSync(confPath, conf);
  const proc = Bun.spawn(["nginx", "-p", opts.workDir, "-c", confPath, "-g", "daemon off;"], {
    stdout: "ignore", stderr: "pipe",
  });
  for (const l of [...opts.listen, ...(opts.plain?.listen ?? [])]) await waitForPort(l.host, l.port);
  return {
    proc, opts,
    urlFor: (path, i = 0) => `https://${hostInUrl(opts.listen[i].host)}:${opts.listen[i].port}/${path.replace(/^\//, "")}`,
    async stop() { proc.kill("SIGTERM"); await proc.exited; Bun.spawnSync(["pkill", "-KILL", "-P", String(proc.pid)]); },
    // Workers are separate processes that outlive a SIGKILLed master: kill them first, then the master.
    kill() { Bun.spawnSync(["pkill", "-KILL", "-P", String(proc.pid)]); proc.kill("SIGKILL"); },
  };
}
