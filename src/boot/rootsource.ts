// Which root image to boot and how to check it: the server config's image (URLs on every server, signed manifest,
// expected digest) wins over airroot.imageurl; the signed manifest is fetched and checked here before anything mounts.
import { createHash } from "node:crypto";
import { createReadStream, existsSync, readFileSync, statSync } from "node:fs";
import { loadManifest, MAX_MANIFEST_BYTES, type Manifest } from "../image/manifest";
import { fetchBounded } from "../util/boundedfetch";
import type { NodeConfig } from "../server/selfapi";
import type { BootOptions } from "./cmdline";
import { httpsGet } from "../client/http";
import { splitZone } from "../client/zone";
import { checkWeight, ORDERS, rankSources, type SourceOrder } from "../source/order";

export interface RootSource {
  /** https URLs of the same image on several servers, in preference order. */
  urls: string[];
  /** Manifest URLs (same manifest on several servers); empty = unverified image (cmdline without airroot.manifest). */
  manifestUrls: string[];
  /** PEM of the image-signing public key that must have signed the manifest. */
  imageKeyPem?: string;
  /** The image the server told us to boot: an older, validly signed manifest is refused. */
  expectDigest?: string;
  from: "server" | "cmdline";
  /**
   * How the mount engine orders the servers: "spread" (weighted rendezvous hash of nodeId, the node's name) unless the
   * server config says otherwise; urls and manifestUrls are already in that order (for the manifest fetch and copies).
   */
  order?: SourceOrder;
  nodeId?: string;
  /** For "spread": one weight per URL of `urls` (same order); undefined = equal. */
  weights?: number[];
}

export interface RootSourceInputs {
  options: Pick<BootOptions, "imageUrls" | "manifestUrls">;
  config?: Pick<NodeConfig, "image" | "imagePublicKey"> & Partial<Pick<NodeConfig, "name">>;
  /** The site's image key from the initramfs (/etc/airroot/site/image-key.pem), if it has one. */
  siteImageKeyPem?: string;
}

/**
 * Decides the root source. The initramfs's own image key wins over the config's: it is the offline root of trust,
 * and the config (though fetched over mutual TLS) then cannot swap it; the config's key serves sites whose
 * initramfs carries none. Returns undefined when neither the config nor the command line names an image.
 */
export function chooseRootSource(i: RootSourceInputs): RootSource | undefined {
  const img = i.config?.image;
  if (img && img.urls.length) {
    const key = i.siteImageKeyPem ?? i.config?.imagePublicKey;
    if (!img.manifestUrls.length || !key) throw new Error("the server config names an image but no signed manifest or image key; refusing an unverifiable root");
    return spreadSource({ urls: img.urls, manifestUrls: img.manifestUrls, imageKeyPem: key, expectDigest: img.digest, from: "server" },
      img.order, img.weights, i.config?.name);
  }
  if (i.options.imageUrls.length) {
    const m = i.options.manifestUrls;
    return { urls: i.options.imageUrls, manifestUrls: m, imageKeyPem: m.length ? i.siteImageKeyPem : undefined, from: "cmdline" };
  }
  return undefined;
}

/**
 * Booting nodes spread over the image servers by default: rendezvous order on the node's name (its enrollment name,
 * the same on every boot), weighted as the server says. An order this node does not know (a newer server) is taken
 * as spread, and weights that do not fit the URLs as equal ones: either only changes which server is tried first.
 * Without a name (no config) the order stays as listed: every node would hash the same identity anyway.
 */
function spreadSource(rs: RootSource, order: string | undefined, weights: unknown, name: string | undefined): RootSource {
  const o: SourceOrder = (ORDERS as readonly string[]).includes(order ?? "") ? order as SourceOrder : "spread";
  if (o !== "spread") return { ...rs, order: o };
  if (!name) return rs;
  const w = Array.isArray(weights) && weights.length === rs.urls.length && weights.every((x) => { try { return checkWeight(x) >= 0; } catch { return false; } })
    ? weights as number[] : undefined;
  const rank = rankSources("spread", rs.urls.map((href, i) => ({ href, weight: w?.[i] })), name);
  const pairs = rs.manifestUrls.length === rs.urls.length;
  return { ...rs, order: "spread", nodeId: name, urls: rank.map((i) => rs.urls[i]), weights: w && rank.map((i) => w[i]),
    manifestUrls: pairs ? rank.map((i) => rs.manifestUrls[i]) : rs.manifestUrls };
}

export function readSiteImageKey(file: string): string | undefined {
  return existsSync(file) ? readFileSync(file, "utf8") : undefined;
}

/**
 * Fetches the signed manifest from each URL in turn until one verifies (signature under the image key, and the
 * expected digest when given). A server that sends an old or altered manifest is skipped like a dead one.
 */
export async function fetchVerifiedManifest(urls: string[], keyPem: string, ca: string, expectDigest?: string,
  log?: (l: string) => void, timeoutMs = 60_000): Promise<{ url: string; manifest: Manifest; bytes: Uint8Array }> {
  const errors: string[] = [];
  for (const url of urls) {
    try {
      const bytes = splitZone(url).zone ? await fetchZonedBounded(url, ca, timeoutMs) : await fetchBounded(url, { ca, maxBytes: MAX_MANIFEST_BYTES, timeoutMs });
      return { url, manifest: loadManifest(bytes, keyPem, { expectDigest }), bytes };
    } catch (e) {
      errors.push(`${url}: ${(e as Error).message}`);
      log?.(`image manifest ${url} not usable: ${(e as Error).message}`);
    }
  }
  throw new Error(`no server gave a valid signed manifest${expectDigest ? ` for image ${expectDigest}` : ""}: ${errors.join("; ")}`);
}

/** fetchBounded's rules (no redirects, the cap as bytes arrive, one deadline) for a URL with an IPv6 zone. */
async function fetchZonedBounded(url: string, ca: string, timeoutMs: number): Promise<Uint8Array> {
  const signal = AbortSignal.timeout(timeoutMs);
  const res = await httpsGet(url, ca, signal);
  try {
    if (res.status >= 300 && res.status < 400) throw new Error(`HTTP ${res.status} redirect refused: fetch only from the configured URLs`);
    if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
    if (Number(res.header("content-length") ?? "0") > MAX_MANIFEST_BYTES) throw new Error(`reply exceeds the ${MAX_MANIFEST_BYTES}-byte limit`);
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const c of res.body) {
      size += c.length;
      if (size > MAX_MANIFEST_BYTES) throw new Error(`reply exceeds the ${MAX_MANIFEST_BYTES}-byte limit (cut after ${size} bytes)`);
      chunks.push(c);
    }
    return new Uint8Array(Buffer.concat(chunks));
  } finally {
    await res.close();
  }
}

/** Checks a downloaded image file against its signed manifest (size and SHA-256 of the whole file). */
export async function verifyImageFile(path: string, m: Manifest): Promise<void> {
  const size = statSync(path).size;
  if (size !== m.size) throw new Error(`downloaded image has ${size} bytes, the signed manifest says ${m.size}`);
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  const got = h.digest("hex");
  if (got !== m.digest) throw new Error(`downloaded image has SHA-256 ${got}, the signed manifest says ${m.digest}: altered or wrong file`);
}
