// A real PostgreSQL for the tests: Debian's server binaries (/usr/lib/postgresql/N/bin), a fresh cluster in a
// temporary directory, run as the `postgres` user (initdb and postgres refuse root), listening only on 127.0.0.1 on a
// free port (and a unix socket inside the directory). Password authentication (scram-sha-256) for TCP, so the
// password-file path is exercised too. stop() shuts it down (fast mode) and removes the directory; call it in afterAll.
import { chmodSync, chownSync, copyFileSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./ports.ts";

export interface TestPostgres {
  /** postgres://airroot@127.0.0.1:PORT/airroot, without the password. */
  url: string;
  /** The same with the password in it. */
  urlWithPassword: string;
  password: string;
  /** A file holding the password (0600), for --db-password-file / db-password-file. */
  passwordFile: string;
  dir: string;
  /** A new, empty database on the same server; returns its URL (without the password). */
  createDatabase(name: string): Promise<string>;
  stop(): Promise<void>;
}

/** The newest installed PostgreSQL server's bin directory, or undefined. */
export function postgresBinDir(): string | undefined {
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root).filter((v) => /^\d+$/.test(v) && existsSync(join(root, v, "bin", "pg_ctl"))).sort((a, b) => Number(b) - Number(a));
  return versions.length ? join(root, versions[0], "bin") : undefined;
}

async function asPostgres(cmd: string[], what: string, netns?: string): Promise<string> {
  const p = Bun.spawn([...(netns ? ["ip", "netns", "exec", netns] : []), "runuser", "-u", "postgres", "--", ...cmd], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`test postgres: ${what} failed (exit ${code}): ${(err || out).trim().slice(-2000)}`);
  return out;
}

export interface PostgresOptions {
  /** Run the server inside this network namespace (its own 127.0.0.1): for clients inside that namespace only. */
  netns?: string;
  maxConnections?: number;
  /**
   * Serve TLS (ssl=on) with this certificate and key (PEM files; copied into the cluster's directory, the key 0600
   * and owned by postgres, as the server demands). With `hostsslOnly`, pg_hba.conf has only `hostssl` lines for TCP,
   * so a plaintext connection is refused.
   */
  ssl?: { cert: string; key: string; hostsslOnly?: boolean };
  /** More addresses to listen on besides 127.0.0.1 (other loopback addresses, e.g. 127.0.0.2). */
  extraListen?: string[];
}

export async function startPostgres(o: PostgresOptions = {}): Promise<TestPostgres> {
  const asPg = (cmd: string[], what: string) => asPostgres(cmd, what, o.netns);
  const bin = postgresBinDir();
  if (!bin) throw new Error("test postgres: no PostgreSQL server under /usr/lib/postgresql; install Debian's postgresql package (make deps does)");
  const dir = mkdtempSync(join(tmpdir(), "airroot-pg-"));
  chmodSync(dir, 0o755);
  const data = join(dir, "data"), sock = join(dir, "sock");
  const { uid, gid } = await postgresIds();
  for (const d of [data, sock]) { require("node:fs").mkdirSync(d, { mode: 0o700 }); chownSync(d, uid, gid); }
  const password = Buffer.from(crypto.getRandomValues(new Uint8Array(18))).toString("base64url");
  const pwfile = join(dir, "initdb-password");
  writeFileSync(pwfile, password + "\n", { mode: 0o600 });
  chownSync(pwfile, uid, gid);
  const passwordFile = join(dir, "db-password");
  writeFileSync(passwordFile, password + "\n", { mode: 0o600 });
  const port = await freePort();
  let started = false;
  const stop = async () => {
    if (started) {
      started = false;
      await asPg([join(bin, "pg_ctl"), "-D", data, "-m", "fast", "-w", "-t", "30", "stop"], "pg_ctl stop").catch(() => {});
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await asPg([join(bin, "initdb"), "-D", data, "-U", "airroot", "--pwfile", pwfile, "--auth-local", "trust", "--auth-host", "scram-sha-256",
      "-E", "UTF8", "--no-sync"], "initdb");
    let sslOpts = "";
    if (o.ssl) {
      const cert = join(dir, "server.crt"), key = join(dir, "server.key");
      copyFileSync(o.ssl.cert, cert);
      copyFileSync(o.ssl.key, key);
      chmodSync(cert, 0o644);
      chmodSync(key, 0o600);
      for (const f of [cert, key]) chownSync(f, uid, gid);
      sslOpts = ` -c ssl=on -c ssl_cert_file=${cert} -c ssl_key_file=${key}`;
      if (o.ssl.hostsslOnly) {
        const hba = join(data, "pg_hba.conf");
        writeFileSync(hba, "local all all trust\nhostssl all all 127.0.0.0/8 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n");
        chownSync(hba, uid, gid);
        chmodSync(hba, 0o600);
      }
    }
    const listen = ["127.0.0.1", ...(o.extraListen ?? [])].join(",");
    // Loopback only, a socket in our directory, no fsync (a test cluster: speed over durability).
    const opts = `-c listen_addresses=${listen} -c port=${port} -c unix_socket_directories=${sock} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=${o.maxConnections ?? 100}${sslOpts}`;
    await asPg([join(bin, "pg_ctl"), "-D", data, "-l", join(data, "server.log"), "-o", opts, "-w", "-t", "60", "start"], "pg_ctl start");
    started = true;
    await asPg([join(bin, "createdb"), "-h", sock, "-p", String(port), "-U", "airroot", "airroot"], "createdb airroot");
  } catch (e) { await stop(); throw e; }
  const base = `127.0.0.1:${port}`;
  return {
    url: `postgres://airroot@${base}/airroot`, urlWithPassword: `postgres://airroot:${password}@${base}/airroot`, password, passwordFile, dir,
    async createDatabase(name: string) {
      await asPg([join(bin, "createdb"), "-h", sock, "-p", String(port), "-U", "airroot", name], `createdb ${name}`);
      return `postgres://airroot@${base}/${name}`;
    },
    stop,
  };
}

async function postgresIds(): Promise<{ uid: number; gid: number }> {
  const p = Bun.spawn(["id", "-u", "postgres"], { stdout: "pipe" }), g = Bun.spawn(["id", "-g", "postgres"], { stdout: "pipe" });
  const [u, gg] = await Promise.all([new Response(p.stdout).text(), new Response(g.stdout).text()]);
  if (!/^\d+/.test(u.trim())) throw new Error("test postgres: there is no `postgres` user (Debian's postgresql package creates it)");
  return { uid: Number(u.trim()), gid: Number(gg.trim()) };
}
