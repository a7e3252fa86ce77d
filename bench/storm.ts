// `make bench-storm` (issue 16 §3): a boot storm. STORM_NODES (default 64) simulated nodes, each in its own network
// namespace running the real node path (bench/storm/node.ts: `airroot enroll` or sealed-credential reuse, config, SSH
// host certificate; the root through `airroot mount` + loop + squashfs, replaying a boot's block trace), all started
// at once against 2 `airroot serve` on one PostgreSQL and 3 nginx mirrors (`airroot serve mirror-config nginx`).
// Mid-storm one deployment server (a quarter of the nodes trusted) and one mirror (40 % of the bytes served) are killed (SIGKILL).
// Writes bench/results/storm.json. Traffic stays inside the namespaces it makes (10.77.0.0/16); all of them, the
// processes, mounts and loop devices are removed at the end, also on failure or Ctrl-C.
import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { scratchDir, removeScratchDirs } from "../test/helpers/tmp";
import { startPostgres, type TestPostgres } from "../test/helpers/postgres";
import { debianImagePaths } from "../test/helpers/debian-image";
import { openDatabase } from "../src/server/store/db";
import { addNode, armNode } from "../src/server/store/nodes";
import { HUB, inNs, makeStormNet, mirrorIp, nodeIp, nodeMac, nodeNs, serverIp, type StormNet } from "./storm/net";
import { childPids, cpuSeconds, readMirrorLog, startInNs, startNginxInNs, waitTcpInNs, type NsProc } from "./storm/procs";
import { loadTrace, recordTrace, type Trace } from "./storm/trace";
import { counterSum, percentile, spread } from "./storm/stats";
import type { NodeJob, NodeResult } from "./storm/node";

const NODES = Number(process.env.STORM_NODES ?? 64);
const TPM_NODES = Math.min(NODES, Number(process.env.STORM_TPM_NODES ?? 4));
const TIMEOUT_S = Number(process.env.STORM_TIMEOUT_S ?? 300);
const SERVERS = 2, MIRRORS = 3;
const AIRROOT = process.env.AIRROOT_BENCH_AIRROOT ?? join(import.meta.dir, "..", "dist", "airroot");
const IMAGE = process.env.STORM_IMAGE ?? debianImagePaths().image;
const TRACE_FILE = join(import.meta.dir, "storm-trace.json");
const MiB = 1048576;

function sh(cmd: string[], what = cmd.slice(0, 3).join(" "), timeoutMs = 300_000): string {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe", timeout: timeoutMs });
  if (r.exitCode !== 0) throw new Error(`${what} failed (exit ${r.exitCode}): ${(r.stderr.toString() || r.stdout.toString()).trim().slice(-1500)}`);
  return r.stdout.toString();
}
const airroot = (...args: string[]) => sh([AIRROOT, ...args], `airroot ${args.slice(0, 2).join(" ")}`);
const hubAirroot = (...args: string[]) => sh(inNs(HUB, [AIRROOT, ...args]), `airroot ${args.slice(0, 2).join(" ")}`);
const uuidOf = (i: number) => `00000000-0000-4000-8000-${i.toString(16).padStart(12, "0")}`;
/** Nodes keeping their credential in a TPM (swtpm in their namespace), spread over the list. */
const tpmNode = (i: number) => TPM_NODES > 0 && i % Math.floor(NODES / TPM_NODES) === 0 && i / Math.floor(NODES / TPM_NODES) < TPM_NODES;

interface Sample { t: number; requests: number[]; imageRequests: number[]; cpu: number[]; mirrorCpu: number[]; pgCpu: number; pgConnections: number }

/** Busy and total jiffies of the whole machine (/proc/stat "cpu" line): how loaded the cores were. */
function hostJiffies(): { busy: number; total: number } {
  const v = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  return { busy: total - v[3] - (v[4] ?? 0), total };
}

const cleanups: (() => Promise<void> | void)[] = [];
let cleaned = false;
async function cleanup(): Promise<void> {
  if (cleaned) return;
  cleaned = true;
  for (const c of cleanups.reverse()) { try { await c(); } catch (e) { console.error(`storm cleanup: ${(e as Error).message}`); } }
}
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => { void cleanup().then(() => process.exit(130)); });

/** Kills every process left in a namespace of ours (node scripts, mount daemons, swtpm). */
function killNsPids(ns: string): void {
  const pids = Bun.spawnSync(["ip", "netns", "pids", ns], { stdout: "pipe", stderr: "ignore" }).stdout.toString().trim().split(/\s+/).filter(Boolean);
  for (const p of pids) { try { process.kill(Number(p), "SIGKILL"); } catch {} }
}

/** Loop devices whose backing file lies under `dir` (a node killed before its own clean-up). */
function detachLoops(dir: string): void {
  const out = Bun.spawnSync(["losetup", "-l", "-n", "-O", "NAME,BACK-FILE"], { stdout: "pipe" }).stdout.toString();
  for (const l of out.split("\n")) {
    const [dev, file] = l.trim().split(/\s+/, 2);
    if (dev && file?.startsWith(dir)) Bun.spawnSync(["losetup", "-d", dev]);
  }
}

async function lines(stream: ReadableStream<Uint8Array>, on: (l: string) => void): Promise<void> {
  const dec = new TextDecoder();
  let buf = "";
  for await (const c of stream) {
    buf += dec.decode(c);
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) { on(buf.slice(0, i)); buf = buf.slice(i + 1); }
  }
  if (buf) on(buf);
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("bench/storm.ts needs root (network namespaces, loop devices, mounts)");
  if (!existsSync(AIRROOT)) throw new Error(`${AIRROOT} is missing: run make build`);
  if (!existsSync(IMAGE)) throw new Error(`${IMAGE} is missing: \`bun test test/e2e/systemd.test.ts\` builds it, or set STORM_IMAGE=FILE.sfs`);
  const t0 = Date.now();
  const dir = scratchDir("airroot-storm-");
  chmodSync(dir, 0o755); // nginx workers run as nobody
  cleanups.push(() => removeScratchDirs());
  console.log(`storm: ${NODES} nodes (${TPM_NODES} with swtpm), ${SERVERS} airroot serve on one PostgreSQL, ${MIRRORS} nginx mirrors`);
  const net: StormNet = makeStormNet(NODES, SERVERS, MIRRORS);
  cleanups.push(() => net.remove());
  cleanups.push(() => killNsPids(HUB)); // after the servers' own stop: anything left in the hub
  cleanups.push(() => detachLoops(dir));
  cleanups.push(() => { for (let i = 0; i < NODES; i++) killNsPids(nodeNs(i)); });

  // The site: state A with the image packed and the nodes added (SQLite first, then copied into PostgreSQL).
  const stateA = join(dir, "a"), stateB = join(dir, "b");
  airroot("serve", "init", "--state", stateA, "--address", Array.from({ length: SERVERS }, (_, i) => serverIp(i)).join(","));
  // /metrics answers only listed subnets: the servers' own (the storm scrapes it from the hub).
  airroot("serve", "config", "add", "metrics-subnets", `${serverIp(0)}/24`, "--state", stateA);
  for (let i = 0; i < MIRRORS; i++) airroot("serve", "config", "add", "mirrors", `https://${mirrorIp(i)}`, "--state", stateA);
  console.log("storm: packing the image (unsquashfs + airroot image pack)");
  const tree = join(dir, "tree");
  sh(["nice", "-n", "10", "unsquashfs", "-q", "-n", "-d", tree, IMAGE], "unsquashfs");
  sh(["nice", "-n", "10", AIRROOT, "image", "pack", tree, "--state", stateA, "--profile", "compute"], "airroot image pack");
  rmSync(tree, { recursive: true, force: true });
  const imagesDir = join(stateA, "images");
  const sfs = readdirSync(imagesDir).filter((f) => f.endsWith(".sfs"));
  if (sfs.length !== 1) throw new Error(`expected one packed image, found ${sfs.join(" ")}`);
  const digest = sfs[0].replace(/\.sfs$/, "");
  sh(["sh", "-c", `chmod 0755 '${stateA}' '${imagesDir}' && chmod 0644 '${imagesDir}'/*`], "chmod images");
  let trace = loadTrace(TRACE_FILE, digest);
  if (!trace) {
    console.log(`storm: recording the block trace of image ${digest.slice(0, 12)} into bench/storm-trace.json`);
    trace = recordTrace(join(imagesDir, sfs[0]), digest, dir);
    writeFileSync(TRACE_FILE, JSON.stringify(trace) + "\n");
  }
  console.log(`storm: trace: ${trace.runs.length} runs, ${(trace.bytes / MiB).toFixed(1)} MiB of the ${(trace.imageBytes / MiB).toFixed(1)} MiB image (${trace.files} files)`);
  const db = await openDatabase(stateA);
  try {
    for (let i = 0; i < NODES; i++) {
      await addNode(db, { name: `n${String(i).padStart(4, "0")}`, macs: [nodeMac(i)], uuid: uuidOf(i), profile: "compute", net: { mode: "dhcp" } });
      await armNode(db, `n${String(i).padStart(4, "0")}`, null);
    }
  } finally { await db.close(); }

  const pg: TestPostgres = await startPostgres({ netns: HUB, maxConnections: 300 });
  cleanups.push(() => pg.stop());
  hubAirroot("serve", "copy-db", "--state", stateA, "--db", pg.url, "--db-password-file", pg.passwordFile);
  airroot("serve", "config", "set", "db", pg.url, "--state", stateA);
  airroot("serve", "config", "set", "db-password-file", pg.passwordFile, "--state", stateA);
  cpSync(stateA, stateB, { recursive: true });
  const ca = join(stateA, "keys", "site-ca.crt");

  const servers: NsProc[] = [];
  cleanups.push(async () => { for (const s of servers) await s.stop(); });
  for (let i = 0; i < SERVERS; i++) {
    servers.push(startInNs(HUB, `serve${i}`, [AIRROOT, "serve", "--state", i ? stateB : stateA, "--listen", `${serverIp(i)}:443`, "--no-discovery"], join(dir, `serve${i}.log`)));
  }
  for (let i = 0; i < SERVERS; i++) await waitTcpInNs(HUB, serverIp(i), 443, `airroot serve ${i}`);
  airroot("serve", "mirror-cert", "--state", stateA, "--address", Array.from({ length: MIRRORS }, (_, i) => mirrorIp(i)).join(","), "--out", join(dir, "mirror"));
  const mirrors: ReturnType<typeof startNginxInNs>[] = [];
  cleanups.push(async () => { for (const m of mirrors) await m.stop(); });
  for (let i = 0; i < MIRRORS; i++) {
    const site = airroot("serve", "mirror-config", "nginx", "--state", stateA, "--listen", `${mirrorIp(i)}:443`, "--cert", join(dir, "mirror.crt"), "--key", join(dir, "mirror.key"));
    mirrors.push(startNginxInNs(HUB, `mirror${i}`, join(dir, `mirror${i}`), site));
  }
  for (let i = 0; i < MIRRORS; i++) await waitTcpInNs(HUB, mirrorIp(i), 443, `nginx mirror ${i}`);

  // Nodes with a TPM enroll once before the storm (sealing the credential in their swtpm); in the storm they reuse it.
  const urls = Array.from({ length: SERVERS }, (_, i) => `https://${serverIp(i)}`);
  const jobs: NodeJob[] = [];
  for (let i = 0; i < NODES; i++) {
    const nodeDir = join(dir, "nodes", `n${i}`);
    mkdirSync(nodeDir, { recursive: true });
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", join(nodeDir, "ssh_host_ed25519_key")], "ssh-keygen");
    const job: NodeJob = { name: `n${String(i).padStart(4, "0")}`, mac: nodeMac(i), uuid: uuidOf(i), dir: nodeDir, airroot: AIRROOT, caFile: ca,
      servers: i % 2 ? [...urls].reverse() : urls, traceFile: TRACE_FILE };
    if (tpmNode(i)) {
      const tpmDir = join(nodeDir, "tpm");
      mkdirSync(tpmDir);
      startInNs(nodeNs(i), `swtpm${i}`, ["swtpm", "socket", "--tpm2", "--server", "type=tcp,port=2321,bindaddr=127.0.0.1",
        "--ctrl", "type=tcp,port=2322,bindaddr=127.0.0.1", "--flags", "startup-clear", "--tpmstate", `dir=${tpmDir}`],
        join(nodeDir, "swtpm.log"));
      await waitTcpInNs(nodeNs(i), "127.0.0.1", 2321, `swtpm of ${job.name}`);
      job.tpm = "swtpm:127.0.0.1:2321";
      sh(inNs(nodeNs(i), [AIRROOT, "enroll", "--server", urls[0], "--ca", ca, "--mac", job.mac, "--uuid", job.uuid, "--name", job.name, "--tpm", job.tpm]), `pre-enroll ${job.name}`);
    }
    jobs.push(job);
  }

  // Start every node script, wait until all are loaded, then send the start line to all at once.
  console.log(`storm: starting ${NODES} nodes (setup took ${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  const results = new Map<string, NodeResult>();
  const progress = { ready: 0, trusted: 0, mounted: 0 };
  const procs: Subprocess<"pipe", "pipe", "pipe">[] = [];
  const readers: Promise<void>[] = [];
  const errs = new Map<string, string[]>();
  // The kills follow the nodes' progress lines at once (set below, once the storm starts).
  let onProgress = () => {};
  for (const [i, job] of jobs.entries()) {
    const p = Bun.spawn(inNs(nodeNs(i), ["nice", "-n", "10", process.execPath, join(import.meta.dir, "storm", "node.ts"), JSON.stringify(job)]),
      { stdin: "pipe", stdout: "pipe", stderr: "pipe", timeout: (TIMEOUT_S + 120) * 1000 });
    procs.push(p);
    errs.set(job.name, []);
    readers.push(lines(p.stderr, (l) => {
      if (l === "ready" || l === "trusted" || l === "mounted") { progress[l]++; onProgress(); }
      else errs.get(job.name)!.push(l);
    }));
    readers.push(lines(p.stdout, (l) => { try { const r = JSON.parse(l) as NodeResult; results.set(r.name, r); } catch {} }));
  }
  for (const deadline = Date.now() + 120_000; progress.ready < NODES && Date.now() < deadline;) await Bun.sleep(100);
  if (progress.ready < NODES) throw new Error(`only ${progress.ready} of ${NODES} node scripts loaded within 120 s`);

  const samples: Sample[] = [];
  const sockDir = join(pg.dir, "sock"), pgPort = new URL(pg.url).port;
  // Asynchronous: a blocking spawn would hold back the progress lines, and with them the kills.
  const capture = async (cmd: string[]): Promise<string | undefined> => {
    const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "ignore", stdin: "ignore", timeout: 5000 });
    const [out, code] = await Promise.all([new Response(p.stdout).text(), p.exited]);
    return code === 0 ? out : undefined;
  };
  // The nodes' API requests (the scrapes themselves are route "metrics") and their image requests (weight 0 sources).
  const scrape = async (i: number): Promise<[number, number]> => {
    const page = await capture(inNs(HUB, ["curl", "-sS", "-m", "3", "--cacert", ca, `https://${serverIp(i)}/metrics`]));
    if (page === undefined) return [NaN, NaN];
    return [counterSum(page, "airroot_serve_requests_total", (l) => !/route="(metrics|images)"/.test(l)),
      counterSum(page, "airroot_serve_requests_total", (l) => l.includes('route="images"'))];
  };
  const pgConnections = async () => Number((await capture(["psql", "-h", sockDir, "-p", pgPort, "-U", "airroot", "-d", "airroot", "-Atc",
    "select count(*) from pg_stat_activity where datname = 'airroot' and pid <> pg_backend_pid()"]))?.trim() ?? NaN);
  const alive = Array.from({ length: SERVERS }, () => true);
  // PostgreSQL's CPU: the postmaster with its exited backends (cutime) plus the live ones.
  const postmaster = Number(readFileSync(join(pg.dir, "data", "postmaster.pid"), "utf8").split("\n")[0]);
  const pgCpu = () => cpuSeconds(postmaster) + childPids(postmaster).reduce((a, c) => a + (cpuSeconds(c) || 0), 0);
  const mirrorAlive = Array.from({ length: MIRRORS }, () => true);
  const mirrorCpu = (i: number) => mirrorAlive[i] ? childPids(mirrors[i].proc.pid).reduce((a, c) => a + (cpuSeconds(c) || 0), 0) : NaN;
  const sample = async () => {
    const t = Date.now(), cpu = servers.map((s, i) => alive[i] ? cpuSeconds(s.proc.pid) : NaN), mc = mirrors.map((_, i) => mirrorCpu(i)), pc = pgCpu();
    const [scraped, conns] = await Promise.all([Promise.all(servers.map((_, i) => alive[i] ? scrape(i) : [NaN, NaN])), pgConnections()]);
    samples.push({ t, requests: scraped.map((x) => x[0]), imageRequests: scraped.map((x) => x[1]), cpu, mirrorCpu: mc, pgCpu: pc, pgConnections: conns });
  };
  await sample();

  const start = Date.now();
  for (const p of procs) { p.stdin.write("go\n"); p.stdin.flush(); }
  let killAt = 0, serverKillAt = 0;
  const host0 = hostJiffies();
  const killedServer = SERVERS - 1, killedMirror = 0;
  const exited = Promise.all(procs.map((p) => p.exited));
  let finished = false;
  void exited.then(() => { finished = true; });
  // Mid-storm: the deployment server once a quarter of the nodes are trusted (the rest still in their trust step),
  // the mirror once the mirrors have logged 40 % of the trace's bytes for every node (so the spread before the kill
  // rests on enough bytes). The server's last counters are read first.
  let killingServer = false, mirrorKillDue = false;
  onProgress = () => {
    if (!killingServer && progress.trusted >= Math.ceil(NODES / 4)) {
      killingServer = true;
      void (async () => {
        const [requests, images] = await scrape(killedServer), cpu = cpuSeconds(servers[killedServer].proc.pid);
        servers[killedServer].kill();
        alive[killedServer] = false;
        serverKillAt = Date.now();
        samples.push({ ...samples[samples.length - 1], t: serverKillAt, requests: servers.map((_, i) => i === killedServer ? requests : NaN),
          imageRequests: servers.map((_, i) => i === killedServer ? images : NaN),
          cpu: servers.map((_, i) => i === killedServer ? cpu : NaN) });
        console.log(`storm: +${((serverKillAt - start) / 1000).toFixed(1)} s: killed airroot serve ${serverIp(killedServer)} (${progress.trusted} trusted, ${progress.mounted} mounted)`);
      })();
    }
    if (!killAt && mirrorKillDue) {
      const cpu = mirrorCpu(killedMirror);
      mirrors[killedMirror].kill();
      mirrorAlive[killedMirror] = false;
      killAt = Date.now();
      samples.push({ ...samples[samples.length - 1], t: killAt, mirrorCpu: mirrors.map((_, i) => i === killedMirror ? cpu : NaN) });
      console.log(`storm: +${((killAt - start) / 1000).toFixed(1)} s: killed mirror ${mirrorIp(killedMirror)} (${progress.trusted} trusted, ${progress.mounted} mounted)`);
    }
  };
  const served = () => mirrors.reduce((a, m) => a + readMirrorLog(m.accessLog).reduce((b, x) => b + x.bytes, 0), 0);
  while (!finished && Date.now() - start < TIMEOUT_S * 1000) {
    if (!mirrorKillDue && served() >= 0.4 * NODES * trace.bytes) { mirrorKillDue = true; onProgress(); }
    await sample();
    await Bun.sleep(1000);
  }
  if (!finished) { for (const p of procs) p.kill("SIGKILL"); console.log(`storm: timeout after ${TIMEOUT_S} s`); }
  await exited;
  await Promise.all(readers);
  const end = Date.now();
  await sample();
  const host1 = hostJiffies();

  // Figures.
  const rs = jobs.map((j) => results.get(j.name) ?? { name: j.name, ok: false, error: `no result; stderr: ${errs.get(j.name)!.join(" | ").slice(-500)}`, t: { start } });
  const ok = rs.filter((r) => r.ok);
  const perNode = ok.map((r) => (r.t.replayed! - r.t.start) / 1000);
  const startSpread = (Math.max(...rs.map((r) => r.t.start)) - Math.min(...rs.map((r) => r.t.start))) / 1000;
  const logs = mirrors.map((m) => readMirrorLog(m.accessLog));
  const bytes = logs.map((l) => l.reduce((s, x) => s + x.bytes, 0));
  const bytesBefore = logs.map((l) => l.filter((x) => !killAt || x.msec < killAt).reduce((s, x) => s + x.bytes, 0));
  const firstChoice = Array.from({ length: MIRRORS }, (_, i) => ok.filter((r) => r.firstMirror === mirrorIp(i)).length);
  // Counters only grow: the highest reading is the latest (samples may land out of order around a kill).
  const last = (f: (s: Sample) => number) => { const v = samples.map(f).filter(Number.isFinite); return v.length ? Math.max(...v) : NaN; };
  const serverFigures = servers.map((_, i) => {
    const req0 = samples[0].requests[i], cpu0 = samples[0].cpu[i];
    const req = last((s) => s.requests[i]) - req0, cpu = last((s) => s.cpu[i]) - cpu0;
    const until = i === killedServer && serverKillAt ? serverKillAt : end;
    // The busiest second: the largest rise between two readings about a second apart.
    const seen = samples.filter((x) => Number.isFinite(x.requests[i])).sort((a, b) => a.t - b.t);
    let peak = 0;
    for (let k = 1; k < seen.length; k++) if (seen[k].t - seen[k - 1].t >= 500) peak = Math.max(peak, (seen[k].requests[i] - seen[k - 1].requests[i]) / ((seen[k].t - seen[k - 1].t) / 1000));
    return { address: serverIp(i), killed: i === killedServer && !!serverKillAt, requests: req, requestsPerSecond: req / ((until - start) / 1000), peakRequestsPerSecond: peak,
      imageRequests: last((s) => s.imageRequests[i]) - samples[0].imageRequests[i],
      cpuSeconds: cpu, cpuSecondsPerNodeBooted: cpu / Math.max(1, ok.length) };
  });
  const out = {
    date: new Date().toISOString(), nodes: NODES, tpmNodes: TPM_NODES, servers: SERVERS, mirrors: MIRRORS, image: { digest, bytes: trace.imageBytes },
    trace: { runs: trace.runs.length, bytes: trace.bytes, files: trace.files, how: trace.how },
    startSpreadSeconds: startSpread, allFinishedSeconds: (Math.max(...ok.map((r) => r.t.replayed!), start) - start) / 1000,
    perNodeSeconds: { p50: percentile(perNode, 50), p99: percentile(perNode, 99), max: Math.max(...perNode) },
    trustSeconds: { p50: percentile(ok.map((r) => (r.t.trusted! - r.t.start) / 1000), 50), p99: percentile(ok.map((r) => (r.t.trusted! - r.t.start) / 1000), 99) },
    failures: rs.length - ok.length, failed: rs.filter((r) => !r.ok).map((r) => ({ name: r.name, error: r.error })),
    origins: { enrolled: ok.filter((r) => r.origin === "enrolled").length, sealed: ok.filter((r) => r.origin === "sealed").length },
    killAtSeconds: killAt ? (killAt - start) / 1000 : null, serverKillAtSeconds: serverKillAt ? (serverKillAt - start) / 1000 : null,
    hostCpuBusy: (host1.busy - host0.busy) / Math.max(1, host1.total - host0.total),
    pgCpuSeconds: last((s) => s.pgCpu) - samples[0].pgCpu,
    killedMirror: mirrorIp(killedMirror), killedServer: serverIp(killedServer),
    mirrorFigures: mirrors.map((_, i) => ({ address: mirrorIp(i), bytes: bytes[i], bytesBeforeKill: bytesBefore[i], requests: logs[i].length, firstChoiceOf: firstChoice[i],
      cpuSeconds: last((s) => s.mirrorCpu[i]) - samples[0].mirrorCpu[i] })),
    mirrorSpreadBeforeKill: spread(bytesBefore), mirrorSpreadTotal: spread(bytes),
    bytesPerNode: bytes.reduce((a, b) => a + b, 0) / Math.max(1, ok.length),
    // The engines' own count: what the mirrors logged plus what the deployment servers sent and requests cut by the kill.
    fetchedBytesPerNode: ok.reduce((a, r) => a + (r.fetchedBytes ?? 0), 0) / Math.max(1, ok.length),
    // Bytes per source as the nodes' engines counted them, and the nodes that read image data from a deployment server.
    engineBytesBySource: ok.reduce((m, r) => { for (const x of r.sources ?? []) m[x.host] = (m[x.host] ?? 0) + x.bytes; return m; }, {} as Record<string, number>),
    nodesReadingFromServers: ok.filter((r) => (r.sources ?? []).some((x) => urls.some((u) => new URL(u).host === x.host) && x.bytes > 0))
      .map((r) => ({ name: r.name, firstMirror: r.firstMirror, sources: r.sources })),
    serverFigures,
    // Per sample: seconds since the start, each server's API and image requests so far, PostgreSQL connections.
    timeline: [...samples].sort((a, b) => a.t - b.t).map((x) => ({ s: (x.t - start) / 1000, api: x.requests, images: x.imageRequests, pg: x.pgConnections })),
    pgConnectionsMax: Math.max(...samples.map((s) => s.pgConnections).filter(Number.isFinite)),
  };
  mkdirSync(join(import.meta.dir, "results"), { recursive: true });
  writeFileSync(join(import.meta.dir, "results", "storm.json"), JSON.stringify(out, null, 2) + "\n");
  const f = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : "-");
  console.log(`\nboot storm: ${NODES} nodes (started within ${f(startSpread, 2)} s; ${out.origins.enrolled} enrolled, ${out.origins.sealed} reused a sealed credential)`);
  console.log(`all finished after ${f(out.allFinishedSeconds)} s; per node p50 ${f(out.perNodeSeconds.p50)} s, p99 ${f(out.perNodeSeconds.p99)} s (trust step p50 ${f(out.trustSeconds.p50)} s, p99 ${f(out.trustSeconds.p99)} s); failures: ${out.failures}`);
  for (const x of out.failed.slice(0, 10)) console.log(`  failed ${x.name}: ${x.error}`);
  console.log(`killed: airroot serve ${out.killedServer} at +${f(out.serverKillAtSeconds ?? NaN)} s, mirror ${out.killedMirror} at +${f(out.killAtSeconds ?? NaN)} s; ` +
    `both cores ${f(out.hostCpuBusy * 100, 0)} % busy during the storm`);
  console.log("| mirror | first choice of | MiB before the kill | MiB in all | requests | nginx CPU s |\n|---|---|---|---|---|---|");
  for (const m of out.mirrorFigures) console.log(`| ${m.address} | ${m.firstChoiceOf} | ${f(m.bytesBeforeKill / MiB)} | ${f(m.bytes / MiB)} | ${m.requests} | ${f(m.cpuSeconds, 2)} |`);
  console.log(`spread before the kill: ±${f(out.mirrorSpreadBeforeKill * 100)} % of even (goal ±10 %); in all ±${f(out.mirrorSpreadTotal * 100)} %; ` +
    `${f(out.bytesPerNode / MiB)} MiB per node from the mirrors, ${f(out.fetchedBytesPerNode / MiB)} MiB fetched per node (the engines' count)`);
  console.log(`image bytes by source (the engines' count, MiB): ${Object.entries(out.engineBytesBySource).map(([h, b]) => `${h} ${f(b / MiB)}`).join(", ")}; ` +
    `${out.nodesReadingFromServers.length} nodes read image data from a deployment server`);
  console.log("| airroot serve | API requests | requests/s (mean while up) | busiest second | image requests | CPU s | CPU s per node booted |\n|---|---|---|---|---|---|---|");
  for (const s of serverFigures) console.log(`| ${s.address}${s.killed ? " (killed)" : ""} | ${s.requests} | ${f(s.requestsPerSecond)} | ${f(s.peakRequestsPerSecond)} | ${s.imageRequests} | ${f(s.cpuSeconds, 2)} | ${f(s.cpuSecondsPerNodeBooted, 3)} |`);
  console.log(`PostgreSQL: ${out.pgConnectionsMax} connections at most (sampled each second), ${f(out.pgCpuSeconds, 2)} CPU s`);
  console.log("wrote bench/results/storm.json");
  if (out.failures) process.exitCode = 1;
}

try { await main(); } catch (e) { console.error(`storm: ${(e as Error).message}`); process.exitCode = 1; } finally { await cleanup(); }
