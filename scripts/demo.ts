// `make demo`: the README's deployment walk-through, run for real on this machine (loopback only), then a node booting
// in QEMU (TCG) through airroot: enrollment with a software TPM, the root on demand from the server and a mirror,
// switch_root into systemd; what an admin looks at; a second boot reusing the sealed credential without arming.
// The commands are read from README.md (scripts/demo/readme.ts), so the README shows exactly what ran.
// Everything started here is stopped by PID on exit or Ctrl-C; the console logs are kept in .cache/demo/logs.
// DEMO_KEEP=1 keeps the node running after the first boot until Ctrl-C.
import { join, resolve } from "node:path";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import type { Subprocess } from "bun";
import { readWalkthrough, settingNames } from "./demo/readme";
import { demoSettings } from "./demo/settings";
import { freePort, waitForPort } from "../test/helpers/ports";
import { startNginxSite, type NginxSite } from "../test/helpers/nginx-site";

const REPO = resolve(import.meta.dir, "..");
const CACHE = join(REPO, ".cache/demo");
const RUN = join(CACHE, "run");
const LOGS = join(CACHE, "logs");
const KEEP = process.env.DEMO_KEEP === "1";
const MAC = "52:54:00:12:34:56";
const SERVER_IP = "10.0.2.100", MIRROR_IP = "10.0.2.101";
const t0 = performance.now();

const clock = () => { const s = Math.floor((performance.now() - t0) / 1000); return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`; };
const say = (msg: string) => console.log(`[${clock()}] ${msg}`);
const heading = (msg: string) => console.log(`\n\x1b[1m[${clock()}] == ${msg}\x1b[0m`);
const indent = (text: string) => text.replace(/\n$/, "").split("\n").map((l) => `    ${l}`).join("\n");

// ---- processes we started, stopped by PID whatever happens ----
const children: { name: string; proc: Subprocess }[] = [];
let nginx: NginxSite | undefined;
let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  return (cleaning ??= (async () => {
    // Each child leads its own process group (spawned detached): the group goes, grandchildren (mksquashfs under
    // image pack, QEMU's guestfwd nc) included, as a terminal's Ctrl-C would take them.
    const kill = (c: (typeof children)[number], sig: NodeJS.Signals) => { try { process.kill(-c.proc.pid, sig); } catch { c.proc.kill(sig); } };
    for (const c of [...children].reverse()) {
      if (c.proc.exitCode !== null || c.proc.signalCode) { kill(c, "SIGKILL"); continue; }
      kill(c, "SIGTERM");
      const done = await Promise.race([c.proc.exited.then(() => true), Bun.sleep(5000).then(() => false)]);
      if (!done) kill(c, "SIGKILL");
    }
    await nginx?.stop().catch(() => {});
  })());
}
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(sig, () => {
    console.log(`\n${sig}: stopping everything the demo started (logs kept in ${LOGS})`);
    cleanup().finally(() => process.exit(130));
  });
}
function track(name: string, proc: Subprocess): Subprocess { children.push({ name, proc }); return proc; }

/** Runs one walk-through line with bash, streaming its output indented; a ticker shows progress on long steps. */
async function runLine(text: string, env: Record<string, string>): Promise<void> {
  const started = performance.now();
  const p = track(text, Bun.spawn(["bash", "-euo", "pipefail", "-c", text], { cwd: REPO, env, stdout: "pipe", stderr: "pipe", detached: true }));
  const pump = async (s: ReadableStream<Uint8Array>) => {
    const dec = new TextDecoder();
    let buf = "";
    for await (const chunk of s) {
      buf += dec.decode(chunk, { stream: true });
      let i;
      while ((i = buf.indexOf("\n")) >= 0) { console.log(`    ${buf.slice(0, i).replace(/\r/g, "")}`); buf = buf.slice(i + 1); }
    }
    if (buf) console.log(`    ${buf}`);
  };
  const ticker = setInterval(() => say(`  ... still running (${((performance.now() - started) / 1000).toFixed(0)} s)`), 15_000);
  const [code] = await Promise.all([p.exited, pump(p.stdout), pump(p.stderr)]).finally(() => clearInterval(ticker));
  if (code !== 0) throw new Error(`the walk-through step \`${text}\` failed (exit ${code}); fix it and run make demo again`);
  say(`  done (${((performance.now() - started) / 1000).toFixed(1)} s)`);
}

function sh(cmd: string[], env?: Record<string, string>): string {
  const r = Bun.spawnSync(cmd, { cwd: REPO, env, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr.toString().trim() || `exit ${r.exitCode}`}`);
  return r.stdout.toString();
}

interface Boot { vm: Subprocess; console: () => string; tpm: Subprocess; p22: number; p2222: number }

/** swtpm (a new process per boot: a reboot resets the PCRs; the same state dir: the same TPM) and the QEMU node. */
async function bootNode(n: number, settings: Record<string, string>): Promise<Boot> {
  const tpmDir = join(RUN, "tpm"), sock = join(RUN, "tpm.sock");
  mkdirSync(tpmDir, { recursive: true });
  rmSync(sock, { force: true });
  const tpm = track("swtpm", Bun.spawn(["swtpm", "socket", "--tpm2", "--tpmstate", `dir=${tpmDir}`, "--ctrl", `type=unixio,path=${sock}`, "--terminate"],
    { stdout: "ignore", stderr: "ignore", detached: true }));
  for (let i = 0; i < 50 && !existsSync(sock); i++) await Bun.sleep(100);
  if (!existsSync(sock)) throw new Error("swtpm did not create its control socket within 5 s");
  const p22 = await freePort(), p2222 = await freePort();
  const port = (listen: string) => listen.split(":").pop()!;
  const args = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1536", "-nographic", "-no-reboot",
    "-kernel", join(REPO, "dist/vmlinuz"), "-initrd", join(REPO, "dist/initramfs.cpio.zst"), "-append", "console=ttyS0 quiet",
    "-chardev", `socket,id=chrtpm,path=${sock}`, "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0",
    "-netdev", `user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:${p22}-:22,hostfwd=tcp:127.0.0.1:${p2222}-:2222,` +
      `guestfwd=tcp:${SERVER_IP}:443-cmd:nc 127.0.0.1 ${port(settings.LISTEN)},guestfwd=tcp:${MIRROR_IP}:443-cmd:nc 127.0.0.1 ${port(settings.MIRROR_LISTEN)}`,
    "-device", `virtio-net-pci,netdev=n0,mac=${MAC}`];
  say(`$ ${args.map((a) => (/[\s,;]/.test(a) ? `'${a}'` : a)).join(" ")}`);
  const vm = track(`qemu boot ${n}`, Bun.spawn(args, { stdin: "pipe", stdout: "pipe", stderr: "pipe", detached: true }));
  let out = "";
  const log = join(LOGS, `console-boot${n}.log`);
  writeFileSync(log, "");
  const pump = async (s: ReadableStream<Uint8Array>) => {
    const dec = new TextDecoder();
    for await (const c of s) { const t = dec.decode(c, { stream: true }).replace(/\r/g, ""); out += t; require("node:fs").appendFileSync(log, t); }
  };
  pump(vm.stdout); pump(vm.stderr);
  return { vm, console: () => out, tpm, p22, p2222 };
}

function sshArgs(b: Boot, port: number, settings: Record<string, string>): string[] {
  return ["ssh", "-p", String(port), "-i", settings.ADMIN_KEY.replace(/\.pub$/, ""), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
    "-o", `UserKnownHostsFile=${join(RUN, "known_hosts")}`, "-o", "GlobalKnownHostsFile=/dev/null", "-o", "HostKeyAlias=n001",
    "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "root@127.0.0.1"];
}

async function ssh(b: Boot, cmd: string, settings: Record<string, string>, port = b.p22, timeoutMs = 60_000) {
  const s = Bun.spawn([...sshArgs(b, port, settings), cmd], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const t = setTimeout(() => s.kill("SIGKILL"), timeoutMs);
  const [o, e, code] = await Promise.all([new Response(s.stdout).text(), new Response(s.stderr).text(), s.exited]);
  clearTimeout(t);
  return { out: o, err: e, code };
}

/** Waits for the login prompt (systemd is up), failing at once with the console's tail when the boot stops. */
async function waitBooted(b: Boot, n: number, settings: Record<string, string>): Promise<void> {
  const started = performance.now(), deadline = Date.now() + 360_000;
  let lastLine = "", shown = false;
  while (Date.now() < deadline) {
    const c = b.console();
    if (/login:/.test(c)) break;
    const stop = /airroot: boot stopped at step .*/.exec(c);
    if (stop || b.vm.exitCode !== null)
      throw new Error(`boot ${n} failed: ${stop?.[0] ?? `QEMU exited (${b.vm.exitCode})`}\nconsole tail:\n${c.slice(-2500)}`);
    const lines = c.split("\n").filter((l) => /^\[\s*\d+\.\d{3}\] /.test(l));
    const line = lines.at(-1) ?? "";
    if (line !== lastLine) { say(`  console: ${line.trim()}`); lastLine = line; }
    if (!shown && performance.now() - started > 10_000) {
      shown = true;
      say("  while it boots, in another terminal (host certificates checked against the site's SSH CA):");
      console.log(`    ${sshArgs(b, b.p22, settings).join(" ")}          # the booted OS, once up`);
      console.log(`    ${sshArgs(b, b.p2222, settings).join(" ")}          # the debug sshd in the initramfs`);
    }
    await Bun.sleep(500);
  }
  if (!/login:/.test(b.console())) throw new Error(`boot ${n}: no login prompt after 6 min; console in ${join(LOGS, `console-boot${n}.log`)}`);
  say(`  node up: login prompt after ${((performance.now() - started) / 1000).toFixed(1)} s`);
  for (let i = 0; i < 30; i++) {
    const r = await ssh(b, "true", settings, b.p22, 20_000);
    if (r.code === 0) return;
    await Bun.sleep(2000);
  }
  throw new Error(`boot ${n}: ssh to the node on port 22 with its host certificate failed`);
}

async function show(b: Boot, settings: Record<string, string>, airroot: (a: string) => string): Promise<void> {
  heading("The console timeline (airroot init's lines)");
  console.log(indent(b.console().split("\n").filter((l) => /^\[\s*\d+\.\d{3}\] /.test(l)).join("\n")));
  heading("airroot node list");
  console.log(indent(airroot(`node list --state ${settings.STATE}`)));
  for (const [title, cmd] of [
    ["ssh node: the root is an overlay over the on-demand image", "findmnt -n -o TARGET,SOURCE,FSTYPE,OPTIONS /; systemctl is-system-running"],
    ["ssh node: memory", "free -m"],
    ["ssh node: the mount engine", "airroot status"],
  ] as const) {
    heading(title);
    const r = await ssh(b, cmd, settings);
    console.log(indent(r.out + (r.code ? `(exit ${r.code}) ${r.err}` : "")));
  }
}

async function powerOff(b: Boot, n: number, settings: Record<string, string>): Promise<void> {
  say(`powering node ${n} off (systemctl poweroff over ssh)`);
  await ssh(b, "systemctl poweroff", settings, b.p22, 20_000);
  const code = await Promise.race([b.vm.exited, Bun.sleep(120_000).then(() => "timeout")]);
  if (code === "timeout") { b.vm.kill("SIGKILL"); say("  the node did not power off within 2 min: killed"); }
  b.tpm.kill("SIGTERM");
  await b.tpm.exited;
}

async function main(): Promise<void> {
  const w = readWalkthrough(join(REPO, "README.md"));
  const settings = await demoSettings(w, CACHE);
  const env: Record<string, string> = { ...process.env as Record<string, string>, ...settings, PATH: `${join(REPO, "dist")}:${process.env.PATH}` };
  const airroot = (a: string) => sh(["bash", "-c", `airroot ${a}`], env);
  mkdirSync(LOGS, { recursive: true });
  rmSync(RUN, { recursive: true, force: true });
  mkdirSync(RUN, { recursive: true });
  mkdirSync(join(RUN, "mirror"), { recursive: true });

  heading("Your admin key (here a new one; at a site: ~/.ssh/id_ed25519.pub)");
  sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "demo-admin", "-f", settings.ADMIN_KEY.replace(/\.pub$/, "")]);
  say(`  ${settings.ADMIN_KEY}`);
  heading("The walk-through (README.md, \"Deployment walk-through\"), with:");
  for (const k of settingNames(w)) console.log(`    ${k}=${settings[k]}`);

  const steps = w.filter((l) => l.kind === "run");
  for (const [i, l] of steps.entries()) {
    heading(`step ${i + 1}/${steps.length}${l.comment ? `: ${l.comment}` : ""}`);
    say(`$ ${l.text}`);
    if (/^mmdebstrap /.test(l.text)) {
      if (existsSync(join(settings.ROOT, "etc/os-release"))) { say(`  cached from an earlier run: ${settings.ROOT} (rm -rf it to build it again)`); continue; }
      // Built beside and renamed when complete, so an interrupted build is never taken for the cache.
      const partial = `${settings.ROOT}.partial`;
      rmSync(partial, { recursive: true, force: true });
      await runLine(l.text, { ...env, ROOT: partial });
      renameSync(partial, settings.ROOT);
      continue;
    }
    await runLine(l.text, env);
  }

  heading("The mirror's nginx (at a site: systemctl reload nginx; here a private nginx with the same file)");
  const [mhost, mport] = [settings.MIRROR_LISTEN.slice(0, settings.MIRROR_LISTEN.lastIndexOf(":")), Number(settings.MIRROR_LISTEN.split(":").pop())];
  nginx = await startNginxSite({ workDir: join(RUN, "mirror/nginx"), siteConfig: readFileSync(settings.NGINX_CONF, "utf8"), waitFor: [{ host: mhost, port: mport }] });
  track("nginx", nginx.proc);
  say(`  nginx serving ${settings.MIRROR_IMAGES} on ${settings.MIRROR_LISTEN} (the node reaches it as https://${MIRROR_IP})`);

  for (const l of w.filter((x) => x.kind === "serve")) {
    heading(l.comment || "service");
    say(`$ ${l.text} &`);
    const out = Bun.file(join(LOGS, "serve.log")).writer();
    const p = track(l.text, Bun.spawn(["bash", "-c", `exec ${l.text}`], { cwd: REPO, env, stdout: "pipe", stderr: "pipe", detached: true }));
    for (const s of [p.stdout, p.stderr]) (async () => { for await (const c of s) { out.write(c); out.flush(); } })();
    const [host, port] = [settings.LISTEN.slice(0, settings.LISTEN.lastIndexOf(":")), Number(settings.LISTEN.split(":").pop())];
    await waitForPort(host, port, 20_000).catch((e) => { throw new Error(`${l.text}: ${e.message}; see ${join(LOGS, "serve.log")}`); });
    say(`  listening on ${settings.LISTEN} (pid ${p.pid}; log ${join(LOGS, "serve.log")}); QEMU forwards the node's https://${SERVER_IP} there`);
  }
  writeFileSync(join(RUN, "known_hosts"), `@cert-authority * ${readFileSync(join(settings.STATE, "keys/ssh-ca.pub"), "utf8").trim()}\n`);

  heading("Boot 1: the armed node enrolls with its TPM, mounts its root on demand, switch_root into systemd");
  const b1 = await bootNode(1, settings);
  await waitBooted(b1, 1, settings);
  await show(b1, settings, airroot);
  if (KEEP) {
    heading("DEMO_KEEP=1: the node keeps running; Ctrl-C stops everything");
    console.log(`    ${sshArgs(b1, b1.p22, settings).join(" ")}`);
    await new Promise(() => {});
  }
  await powerOff(b1, 1, settings);

  heading("Boot 2: the same node, not armed: it reuses the credential sealed in its TPM");
  console.log(indent(airroot(`node show n001 --state ${settings.STATE}`).split("\n").filter((l) => /^armed:/.test(l)).join("\n")));
  const b2 = await bootNode(2, settings);
  await waitBooted(b2, 2, settings);
  heading("The console timeline of boot 2");
  console.log(indent(b2.console().split("\n").filter((l) => /^\[\s*\d+\.\d{3}\] /.test(l)).join("\n")));
  heading("airroot node list");
  console.log(indent(airroot(`node list --state ${settings.STATE}`)));
  await powerOff(b2, 2, settings);
  heading(`demo finished in ${clock()}: console logs in ${LOGS}`);
}

try {
  await main();
  await cleanup();
} catch (e) {
  console.error(`\nmake demo failed: ${(e as Error).message}\n(console logs and the server's log are kept in ${LOGS})`);
  await cleanup();
  process.exit(1);
}
