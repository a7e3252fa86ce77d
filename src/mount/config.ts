// `airroot mount` settings: validated once, up front, with errors that say what to fix.
import { existsSync, readFileSync, statSync } from "node:fs";
import { resolve } from "node:path";
import { parseDuration } from "../util/duration";
import { parseWeight } from "../source/order";

export type SourceOrder = "listed" | "latency" | "spread";
const ORDERS: SourceOrder[] = ["listed", "latency", "spread"];

export interface MountConfig {
  urls: string[];
  mountpoint: string;          // absolute
  caFile?: string;             // PEM bundle; undefined = system store
  order: SourceOrder;
  nodeId?: string;
  /** For order "spread": one weight per URL (same order), from --weight; undefined = equal weights. */
  weights?: number[];
  cacheMb: number;
  ioTimeoutMs?: number;        // undefined = retry forever (right for a root filesystem)
  stallTimeoutMs: number;
  foreground: boolean;
  argv0?: string;
  manifestUrl?: string;        // https URL, or a local file already fetched (e.g. by the boot's root step)
  imageKeyFile?: string;
  expectDigest?: string;       // the image digest the caller was told to boot: refuses an older, validly signed one
  verbose: boolean;
  /** --fill: the local copy (a file, e.g. on tmpfs, or a block device) the background fill writes; needs a manifest. */
  fillPath?: string;
  fillRateBytesPerSec?: number; // --fill-rate MB/s; undefined = no cap (the fill is low priority anyway)
  /** --untether-loop: "auto" (loop devices backed by this mount's file), "off", or /dev/loopN. */
  untetherLoop?: string;
}

// cacheMb: the kernel page cache is the main cache; ours only holds readahead and the neighbours of random reads.
// 8 MiB read as fast as 32 MiB (cold sequential, 0 and 2 ms RTT) with 30-50 MiB less daemon RSS at peak.
export const MOUNT_DEFAULTS = { order: "listed" as SourceOrder, cacheMb: 8, stallTimeoutMs: 10_000 };

export class MountConfigError extends Error {
  override name = "MountConfigError";
}

export interface RawMountArgs {
  positional: string[];
  ca?: string; order?: string; nodeId?: string; weights?: string[]; cacheMb?: string; ioTimeout?: string; stallTimeout?: string;
  foreground?: boolean; argv0?: string; manifest?: string; imageKey?: string; expectDigest?: string; verbose?: boolean;
  fill?: string; fillRate?: string; untetherLoop?: string;
  /**
   * Do not stat MOUNTPOINT: a daemon started by the holder for a mount whose daemon died must not touch the mount
   * (no one would answer; the holder checked the directory before the first mount).
   */
  mounted?: boolean;
}

export function parseMountConfig(raw: RawMountArgs): MountConfig {
  const fail = (msg: string): never => { throw new MountConfigError(`airroot mount: ${msg}`); };
  if (raw.positional.length < 2) fail("need at least one image URL and a mount point (airroot mount URL... MOUNTPOINT)");
  const urls = raw.positional.slice(0, -1);
  const mountpoint = resolve(raw.positional[raw.positional.length - 1]);
  for (const u of urls) {
    if (!/^https:\/\/[^/]+\/.+/i.test(u)) fail(`"${u}" is not an https:// URL of a file (plain HTTP is never trusted for a root image)`);
  }
  if (new Set(urls).size !== urls.length) fail("the same URL is listed twice");
  if (!raw.mounted && (!existsSync(mountpoint) || !statSync(mountpoint).isDirectory())) fail(`mount point ${mountpoint} is not an existing directory (create it first)`);

  const order = (raw.order ?? MOUNT_DEFAULTS.order) as SourceOrder;
  if (!ORDERS.includes(order)) fail(`--order must be one of ${ORDERS.join(", ")} (got "${raw.order}")`);
  const weights = raw.weights?.length ? parseWeights(raw.weights, urls, fail) : undefined;
  if (weights && order !== "spread") fail(`--weight counts only with --order spread (the weighted rendezvous spread), not --order ${order}`);
  const cacheMb = raw.cacheMb === undefined ? MOUNT_DEFAULTS.cacheMb : Number(raw.cacheMb);
  if (!Number.isInteger(cacheMb) || cacheMb < 0 || cacheMb > 65536) fail(`--cache-mb must be a whole number of MiB from 0 to 65536 (got "${raw.cacheMb}")`);
  const ioTimeoutMs = raw.ioTimeout === undefined ? undefined : durationOrFail(raw.ioTimeout, "--io-timeout", fail);
  const stallTimeoutMs = raw.stallTimeout === undefined ? MOUNT_DEFAULTS.stallTimeoutMs : durationOrFail(raw.stallTimeout, "--stall-timeout", fail);
  if (stallTimeoutMs < 100) fail("--stall-timeout must be at least 100ms");

  const caFile = raw.ca ? resolve(raw.ca) : undefined;
  if (caFile) readableOrFail(caFile, "--ca", fail);
  const imageKeyFile = raw.imageKey ? resolve(raw.imageKey) : undefined;
  if (imageKeyFile) readableOrFail(imageKeyFile, "--image-key", fail);
  if (raw.manifest && !imageKeyFile) fail("--manifest needs --image-key (the image-signing public key that vouches for it)");
  if (imageKeyFile && !raw.manifest) fail("--image-key needs --manifest URL");
  let manifest = raw.manifest;
  if (manifest && !/^https:\/\//i.test(manifest)) {
    if (/^[a-z]+:\/\//i.test(manifest)) fail(`--manifest "${manifest}" is neither an https:// URL nor a local file`);
    manifest = resolve(manifest);
    readableOrFail(manifest, "--manifest", fail);
  }
  if (raw.expectDigest !== undefined && !/^[0-9a-f]{64}$/.test(raw.expectDigest)) fail(`--expect-digest must be 64 lower-case hex digits (a SHA-256), got "${raw.expectDigest}"`);
  if (raw.expectDigest && !manifest) fail("--expect-digest needs --manifest (the digest is checked against the signed manifest)");
  if (raw.argv0 !== undefined && (raw.argv0 === "" || raw.argv0.includes("\0"))) fail("--argv0 must be a non-empty name");

  let fillPath: string | undefined, fillRateBytesPerSec: number | undefined;
  if (raw.fill !== undefined) {
    const f = raw.fill.startsWith("disk:") ? raw.fill.slice(5) : raw.fill;
    if (!f) fail("--fill needs a PATH (a file, e.g. on tmpfs, or disk:/dev/DEVICE)");
    fillPath = resolve(f);
    if (!manifest) fail("--fill needs --manifest (every chunk written to the local copy is verified against the signed manifest)");
    if (existsSync(fillPath) && statSync(fillPath).isDirectory()) fail(`--fill ${fillPath} is a directory; name a file in it`);
  }
  if (raw.fillRate !== undefined) {
    const r = Number(raw.fillRate);
    if (!raw.fillRate.trim() || !Number.isFinite(r) || r <= 0) fail(`--fill-rate must be a positive number of MB/s (got "${raw.fillRate}")`);
    if (!fillPath) fail("--fill-rate needs --fill PATH");
    fillRateBytesPerSec = r * 1e6;
  }
  const untetherLoop = raw.untetherLoop ?? "auto";
  if (!/^(auto|off|\/dev\/loop\d+)$/.test(untetherLoop)) fail(`--untether-loop must be auto, off or /dev/loopN (got "${untetherLoop}")`);
  if (raw.untetherLoop !== undefined && !fillPath) fail("--untether-loop needs --fill PATH");

  return {
    fillPath, fillRateBytesPerSec, untetherLoop,
    urls, mountpoint, caFile, order, nodeId: raw.nodeId, weights, cacheMb, ioTimeoutMs: ioTimeoutMs || undefined, stallTimeoutMs,
    foreground: !!raw.foreground, argv0: raw.argv0, manifestUrl: manifest, imageKeyFile, expectDigest: raw.expectDigest, verbose: !!raw.verbose,
  };
}

/**
 * --weight URL=W: W for the image URL that is URL, or for every image URL under it (a server's base URL, e.g.
 * https://m1 for https://m1/images/x.sfs; the longest match wins). Unnamed URLs weigh 1; 0 makes a server a last
 * resort, used only when every server with a weight is down.
 */
function parseWeights(specs: string[], urls: string[], fail: (m: string) => never): number[] {
  const given: { prefix: string; weight: number }[] = [];
  for (const spec of specs) {
    const eq = spec.lastIndexOf("=");
    if (eq <= 0) fail(`--weight "${spec}" must be URL=WEIGHT, e.g. --weight https://mirror1=10`);
    const prefix = spec.slice(0, eq).replace(/\/+$/, ""), text = spec.slice(eq + 1);
    let weight = 0;
    try { weight = parseWeight(text, `--weight ${prefix}:`); } catch (e) { fail((e as Error).message); }
    if (given.some((g) => g.prefix === prefix)) fail(`--weight names ${prefix} twice`);
    if (!urls.some((u) => u === prefix || u.startsWith(`${prefix}/`))) fail(`--weight ${prefix} is none of the image URLs, nor a base URL of one`);
    given.push({ prefix, weight });
  }
  return urls.map((u) => given.filter((g) => u === g.prefix || u.startsWith(`${g.prefix}/`))
    .sort((a, b) => b.prefix.length - a.prefix.length)[0]?.weight ?? 1);
}

function durationOrFail(text: string, flag: string, fail: (m: string) => never): number {
  try { return parseDuration(text, flag); } catch (e) { return fail((e as Error).message); }
}

function readableOrFail(path: string, flag: string, fail: (m: string) => never): void {
  try { readFileSync(path); } catch (e) { fail(`${flag} ${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`); }
}
