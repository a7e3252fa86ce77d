// One simulated node of the boot storm, run inside its own network namespace (`ip netns exec NS bun node.ts JSON`):
// the node path of a real boot with the real binary. `airroot enroll` (enrollment, or with --tpm the credential
// sealed in the node's swtpm: reuse), which also fetches the config and certifies the SSH host key; then the root as
// the initramfs does it (chooseRootSource + fetchVerifiedManifest + rootMountArgs from src/boot, `airroot mount`),
// a loop device on the mounted image, its squashfs mounted, and the boot's block trace replayed on that loop
// device. Prints one JSON line (NodeResult) on stdout; takes everything down again before exiting.
import { mkdirSync, openSync, readFileSync, readSync, closeSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { chooseRootSource, fetchVerifiedManifest } from "../../src/boot/rootsource";
import { rootMountArgs } from "../../src/boot/image";
import { parseImageUrl } from "../../src/source/url";
import type { NodeConfig } from "../../src/server/selfapi";
import type { Trace } from "./trace";

export interface NodeJob {
  name: string; mac: string; uuid: string; dir: string; airroot: string; caFile: string; servers: string[];
  traceFile: string; tpm?: string;
}
export interface NodeResult {
  name: string; ok: boolean; error?: string;
  /** Epoch ms: the start, and the end of each step. */
  t: { start: number; trusted?: number; mounted?: number; replayed?: number };
  origin?: string; server?: string; firstMirror?: string; traceBytes?: number;
  /** Image bytes the mount engine fetched (its own count, from every source). */
  fetchedBytes?: number;
  /** The engine's sources after the replay: host, rank, state (and why), bytes fetched from it. */
  sources?: { host: string; rank: number; state: string; reason?: string; bytes: number }[];
}

async function run(cmd: string[], timeoutMs: number): Promise<string> {
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", stdin: "ignore", timeout: timeoutMs });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`${cmd[0].split("/").pop()} ${cmd[1] ?? ""} exit ${code}: ${(err || out).trim().slice(-600)}`);
  return out + err;
}

/** Reads each trace run from the loop device in 128 KiB requests (squashfs's largest block). */
function replay(dev: string, trace: Trace): number {
  const fd = openSync(dev, "r");
  const buf = Buffer.allocUnsafe(131072);
  let total = 0;
  try {
    for (const [off, len] of trace.runs) {
      for (let o = off; o < off + len; o += buf.length) {
        const n = readSync(fd, buf, 0, Math.min(buf.length, off + len - o), o);
        if (n <= 0) throw new Error(`short read at ${o} of ${dev}`);
        total += n;
      }
    }
  } finally { closeSync(fd); }
  return total;
}

async function goLine(): Promise<void> {
  const reader = Bun.stdin.stream().getReader();
  let got = "";
  while (!got.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("stdin closed before the start");
    got += new TextDecoder().decode(value);
  }
  reader.releaseLock();
}

async function main(job: NodeJob): Promise<NodeResult> {
  const trace = JSON.parse(readFileSync(job.traceFile, "utf8")) as Trace;
  const hostKey = join(job.dir, "ssh_host_ed25519_key"), cred = join(job.dir, "cred");
  const mnt = join(job.dir, "image"), root = join(job.dir, "root"), state = join(job.dir, "state");
  for (const d of [mnt, root, state]) mkdirSync(d, { recursive: true });
  // Loaded and waiting: the storm starts every node at once with one line on stdin.
  console.error("ready");
  await goLine();
  const r: NodeResult = { name: job.name, ok: false, t: { start: Date.now() } };
  let loop = "", squash = false, mounted = false;
  try {
    // Trust: the same command a node's operator would run; it fails over between the servers given in order.
    const out = await run([job.airroot, "enroll", ...job.servers.flatMap((s) => ["--server", s]), "--ca", job.caFile, "--out", cred,
      "--mac", job.mac, "--uuid", job.uuid, "--name", job.name, "--host-key", hostKey, ...(job.tpm ? ["--tpm", job.tpm] : [])], 240_000);
    r.origin = /reused the credential sealed/.test(out) ? "sealed" : "enrolled";
    r.server = / (?:on|via) (https:\/\/\S+), certificate/.exec(out)?.[1];
    if (!existsSync(`${hostKey}-cert.pub`)) throw new Error("no SSH host certificate written");
    r.t.trusted = Date.now();
    console.error("trusted");
    // Root: as src/boot/boot.ts does it (the manifest checked first, then the mount engine gets it as a file).
    const config = JSON.parse(readFileSync(join(cred, "config.json"), "utf8")) as NodeConfig;
    const rs = chooseRootSource({ options: { imageUrls: [], manifestUrls: [] }, config });
    if (!rs?.imageKeyPem) throw new Error("the config names no signed image");
    const ca = readFileSync(job.caFile, "utf8");
    const m = await fetchVerifiedManifest(rs.manifestUrls, rs.imageKeyPem, ca, rs.expectDigest);
    const keyFile = join(state, "image-key.pem"), manifestFile = join(state, "root.manifest");
    writeFileSync(keyFile, rs.imageKeyPem);
    writeFileSync(manifestFile, m.bytes);
    r.firstMirror = new URL(rs.urls[0]).host;
    await run([job.airroot, "mount", ...rootMountArgs({ urls: rs.urls, caFile: job.caFile, manifestUrl: manifestFile, imageKeyFile: keyFile,
      expectDigest: rs.expectDigest, order: rs.order, nodeId: rs.nodeId, weights: rs.weights }), mnt], 120_000);
    mounted = true;
    const file = join(mnt, parseImageUrl(rs.urls[0]).name);
    loop = (await run(["losetup", "--read-only", "--find", "--show", file], 60_000)).trim();
    // No readahead on the loop device itself: squashfs sends its reads as bios, past the block device's page cache.
    await run(["blockdev", "--setra", "0", loop], 30_000);
    await run(["mount", "-t", "squashfs", "-o", "ro", loop, root], 60_000);
    squash = true;
    if (!readFileSync(join(root, "usr/lib/os-release"), "utf8").includes("Debian")) throw new Error("the mounted root has no Debian os-release");
    r.t.mounted = Date.now();
    console.error("mounted");
    r.traceBytes = replay(loop, trace);
    r.t.replayed = Date.now();
    try {
      const img = JSON.parse(await run([job.airroot, "status", "--json", mnt], 30_000)).image;
      r.fetchedBytes = img?.bytesFetched;
      r.sources = (img?.sources ?? []).map((x: { url: string; preferredRank: number; state: string; reason?: string; bytes: number }) =>
        ({ host: new URL(x.url).host, rank: x.preferredRank, state: x.state, reason: x.reason?.slice(0, 200), bytes: x.bytes }));
    } catch {}
    r.ok = true;
  } catch (e) {
    r.error = (e as Error).message;
  } finally {
    if (squash) Bun.spawnSync(["umount", root], { timeout: 30_000 });
    if (loop) Bun.spawnSync(["losetup", "-d", loop], { timeout: 30_000 });
    if (mounted) Bun.spawnSync([job.airroot, "umount", mnt], { timeout: 30_000 });
  }
  return r;
}

const job = JSON.parse(process.argv[2]) as NodeJob;
console.log(JSON.stringify(await main(job)));
