// `airroot serve` (run the server), `serve init` (create the state dir), `serve mirror-cert` and `serve mirror-config`;
// `serve boot-files`, `serve dhcp-config` and `serve firmware-ca` are in servenetboot.ts.
import { defineCommand } from "citty";
import { resolve } from "node:path";
import { readFileSync } from "node:fs";
import { initState, statePaths, type InitOptions } from "../server/state.ts";
import { serve } from "../server/serve.ts";
import { issueServerCert, loadCa } from "../pki/x509ca.ts";
import { writePrivate } from "../client/credential.ts";
import { createLogger } from "../util/log.ts";
import { repeated } from "./args.ts";

const init = defineCommand({
  meta: {
    name: "init",
    description: "Create or complete a server state dir: site TLS CA, server certificate, node CA, SSH CA, image key, database and config.json. Re-running never replaces existing keys.",
  },
  args: {
    state: { type: "string", description: "state directory to create (0700)", required: true },
    address: { type: "string", description: "address nodes reach this server at (repeatable or comma-separated); added to the server certificate; nodes are told https://ADDRESS[:PORT] unless --advertise is given" },
    advertise: { type: "string", description: "base URL nodes are told for this server, e.g. https://boot.example:8443 behind a port forward (repeatable; default https://ADDRESS[:PORT] for each --address); its host is added to a new server certificate" },
    port: { type: "string", description: "HTTPS port (default 443)" },
    "trusted-subnet": { type: "string", description: "extra subnet from which enrollment is accepted, e.g. 10.1.0.0/16 (repeatable)" },
    domain: { type: "string", description: "DNS domain of the nodes (FQDN principal in SSH host certificates)" },
    join: { type: "string", description: "make a new server of an existing site: FILE from `airroot serve export` (or that server's state dir, copied over) gives the site's CAs, SSH CA, image keys and database settings; this server gets its own server id and a server certificate for its --address from the site CA. --state must be new or empty" },
  },
  async run({ args, rawArgs }) {
    const port = args.port === undefined ? undefined : Number(args.port);
    if (port !== undefined && !(Number.isInteger(port) && port > 0 && port < 65536)) throw new Error(`serve init: --port "${args.port}" is not a port number`);
    const opts = {
      addresses: repeated(rawArgs, "address"), advertise: repeated(rawArgs, "advertise"), port,
      trustedSubnets: repeated(rawArgs, "trusted-subnet"), domain: args.domain,
    };
    if (args.join !== undefined) { await runJoin(resolve(args.state), resolve(args.join), opts); return; }
    const r = await initState(resolve(args.state), opts);
    for (const f of r.created) console.log(`created ${f}`);
    for (const f of r.kept) console.log(`kept    ${f}`);
    for (const w of r.warnings) console.error(`warning: ${w}`);
    if (r.sans.length) console.log(`server certificate names: ${r.sans.join(" ")}`);
    console.log(`nodes are told: ${r.advertised.join(" ") || "(nothing)"}`);
    for (const n of r.notes) console.log(`note: ${n}`);
    console.log(`nodes must trust ${statePaths(resolve(args.state)).siteCaCert} (put it in the initramfs)`);
  },
});

async function runJoin(state: string, from: string, opts: InitOptions): Promise<void> {
  const { readBundle } = await import("../server/sitebundle.ts");
  const { joinState } = await import("../server/join.ts");
  const bundle = readBundle(from);
  const r = await joinState(state, bundle, opts);
  for (const f of r.created) console.log(`created ${f}`);
  for (const w of r.warnings) console.error(`warning: ${w}`);
  console.log(`joined the site of server ${bundle.from.serverId} (${bundle.from.host}) as server ${r.serverId}`);
  console.log(`server certificate names: ${r.sans.join(" ")}`);
  console.log(`nodes are told: ${r.advertised.join(" ") || "(nothing)"}`);
  if (r.peersAdded.length) console.log(`peers: ${r.peersAdded.join(" ")} (the other server)`);
  for (const n of r.notes) console.log(`note: ${n}`);
  if (r.advertised.length) console.log(`on the other servers: airroot serve config add peers ${r.advertised.join(" ")} --state STATE`);
}

const mirrorCert = defineCommand({
  meta: { name: "mirror-cert", description: "Issue a TLS certificate and key for an image mirror (nginx/apache) from the site CA." },
  args: {
    state: { type: "string", description: "server state directory", required: true },
    address: { type: "string", description: "IP address or DNS name of the mirror (repeatable or comma-separated)", required: true },
    out: { type: "string", description: "output prefix: writes PREFIX.crt and PREFIX.key (0600)", required: true },
  },
  async run({ args, rawArgs }) {
    const p = statePaths(resolve(args.state));
    const ca = await loadCa(readFileSync(p.siteCaCert, "utf8"), readFileSync(p.siteCaKey, "utf8"));
    const sans = repeated(rawArgs, "address");
    const kc = await issueServerCert(ca, sans, "airroot image mirror");
    writePrivate(`${args.out}.key`, kc.keyPem);
    writePrivate(`${args.out}.crt`, kc.certPem + readFileSync(p.siteCaCert, "utf8"));
    console.log(`wrote ${args.out}.crt (with the site CA appended) and ${args.out}.key for ${sans.join(", ")}`);
  },
});

const SUBCOMMANDS = ["init", "config", "mirror-cert", "mirror-config", "site-config", "boot-files", "dhcp-config", "firmware-ca", "copy-db", "status", "export"];
const VALUE_FLAGS = ["--state", "--listen", "--http-listen", "--advertise", "--discovery-port", "--db", "--db-password-file"];

/** True when the first positional word names a subcommand (skipping the values of serve's own options). */
function invokedSubcommand(rawArgs: string[]): boolean {
  for (let i = 0; i < rawArgs.length; i++) {
    const a = rawArgs[i];
    if (VALUE_FLAGS.includes(a)) { i++; continue; }
    if (a.startsWith("-")) continue;
    return SUBCOMMANDS.includes(a);
  }
  return false;
}

export const serveCommand = defineCommand({
  meta: {
    name: "serve",
    description: "Run the deployment server: images over HTTPS, node enrollment and the mutual-TLS node API, network boot files (/boot/, also over plain HTTP with http-port or --http-listen), discovery, and GET /metrics in Prometheus text format (to loopback and config metrics-subnets only)",
  },
  args: {
    state: { type: "string", description: "server state directory (made by `airroot serve init`)" },
    listen: { type: "string", description: "IPV4:PORT or [IPV6]:PORT to listen on (repeatable; default [::]:PORT from config.json); nodes are not told this address, see --advertise" },
    advertise: { type: "string", description: "base URL nodes are told for this server, overriding config.json (repeatable), e.g. https://10.0.2.100 when --listen 127.0.0.1:8443 is port-forwarded" },
    "http-listen": { type: "string", description: "IPV4:PORT or [IPV6]:PORT for the plain-HTTP network boot listener, /boot/ only (repeatable; default: the --listen hosts on config http-port when it is set, else none)" },
    // citty reads `--no-discovery` as discovery=false (an option named "no-discovery" would never be set).
    discovery: { type: "boolean", default: true, description: "answer multicast discovery queries (UDP port 7413, groups 239.255.74.13 and ff02::7413)", negativeDescription: "do not answer multicast discovery queries (binds no UDP socket)" },
    "discovery-port": { type: "string", description: "UDP port for discovery (default from config.json, 7413)" },
    db: { type: "string", description: "where the records are: sqlite (STATE/airroot.db) or postgres://USER@HOST[:PORT]/DATABASE, shared by several airroot serve instances (default: config db, else sqlite); TLS: add ?sslmode=verify-full&sslrootcert=/path/ca.pem (or verify-ca, require, disable); a password here shows in ps: prefer --db-password-file" },
    "db-password-file": { type: "string", description: "file whose first line is the PostgreSQL password (default: config db-password-file)" },
    verbose: { type: "boolean", description: "log debug lines" },
  },
  subCommands: {
    init,
    config: () => import("./serveconfig.ts").then((m) => m.configCommand),
    "mirror-cert": mirrorCert,
    "mirror-config": () => import("./image.ts").then((m) => m.mirrorConfigCommand),
    "site-config": () => import("./siteconfig.ts").then((m) => m.siteConfigCommand),
    "boot-files": () => import("./servenetboot.ts").then((m) => m.bootFilesCommand),
    "dhcp-config": () => import("./servenetboot.ts").then((m) => m.dhcpConfigCommand),
    "firmware-ca": () => import("./servenetboot.ts").then((m) => m.firmwareCaCommand),
    "copy-db": () => import("./servedb.ts").then((m) => m.copyDbCommand),
    status: () => import("./servestatus.ts").then((m) => m.statusCommand),
    export: () => import("./serveexport.ts").then((m) => m.exportCommand),
  },
  async run({ args, rawArgs }) {
    if (invokedSubcommand(rawArgs)) return; // citty runs the parent's run() after a subcommand too
    if (!args.state) throw new Error("serve: --state DIR is required (create it with `airroot serve init --state DIR --address ADDR`)");
    const log = createLogger({ prefix: "airroot serve", kmsg: false, verbose: args.verbose });
    const dport = args["discovery-port"] === undefined ? undefined : Number(args["discovery-port"]);
    if (args.db && /^postgres(ql)?:\/\/[^/@]*:[^/@]*@/.test(args.db)) {
      log.warn("--db holds a password, which any user of this host can read in the process list; put it in a file (mode 0600) and give --db-password-file FILE");
    }
    // The signal handlers go in before serve() starts: its listeners accept connections (and an init system may send
    // SIGTERM) before it returns, and a SIGTERM then must still mean a clean shutdown, not the default kill.
    let stopRequested: string | undefined;
    let stopNow: ((sig: string) => void) | undefined;
    const onSignal = (sig: string) => { if (stopNow) stopNow(sig); else stopRequested ??= sig; };
    process.once("SIGTERM", () => onSignal("SIGTERM"));
    process.once("SIGINT", () => onSignal("SIGINT"));
    const srv = await serve({ stateDir: resolve(args.state), listen: repeated(rawArgs, "listen"), httpListen: repeated(rawArgs, "http-listen"), advertise: repeated(rawArgs, "advertise"), discovery: args.discovery !== false, discoveryPort: dport, log,
      db: args.db, dbPasswordFile: args["db-password-file"] === undefined ? undefined : resolve(args["db-password-file"]) });
    for (const l of srv.listening) console.log(`listening on ${l.host.includes(":") ? `[${l.host}]` : l.host}:${l.port}`);
    for (const l of srv.httpListening) console.log(`listening on ${l.host.includes(":") ? `[${l.host}]` : l.host}:${l.port} (plain HTTP, /boot/ only)`);
    process.on("SIGHUP", () => {
      try {
        if (srv.reloadConfig().length === 0) log.info("SIGHUP: config.json re-read, nothing changed");
      } catch (e) { log.error(`SIGHUP: config not reloaded, keeping the previous one: ${(e as Error).message}`); }
    });
    await new Promise<void>((done) => {
      stopNow = (sig: string) => { log.info(`${sig}: shutting down`); srv.close().finally(done); };
      if (stopRequested) stopNow(stopRequested);
    });
  },
});
