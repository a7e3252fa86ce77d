// Network boot routes (GET/HEAD /boot/* and /grub/*) for both listeners of `airroot serve`, HTTPS and plain HTTP: the
// boot files in STATE/boot/ (`serve boot-files`) through serveFile (byte ranges, ETag from inode, size and mtime,
// revalidated because a file may be replaced), the generic iPXE script at /boot/ipxe and the per-node script at
// /boot/ipxe?mac=MAC, and the same pair for GRUB (/grub/grub.cfg, where Debian's signed network GRUB looks, and
// /boot/grub?mac=MAC). A machine that cannot be booted (unknown or malformed MAC, no boot files, no address to give
// it) still gets a script: it explains on the console and hands back to the firmware. Refusals are audited.
import type { Db } from "./store/sql.ts";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Stats } from "node:fs";
import type { Audit } from "./audit.ts";
import type { Logger } from "../util/log.ts";
import { serveFile } from "./static.ts";
import { getNode, nodesByIdentity } from "./store/nodes.ts";
import {
  BOOT_FILE_NAMES, BOOT_URL_PREFIX, GRUB, GRUB_CONFIG_PATH, GRUB_SCRIPT_PATH, IPXE, IPXE_SCRIPT_PATH, cannotBootScript,
  chainScript, malformedMacScript, nodeScript, parseMacParam, unknownMacScript, type BootFileName, type ScriptDialect,
} from "./bootscript.ts";
import { isLinkLocalHost, urlHost, urlHostname } from "./urls.ts";

export type BootScheme = "http" | "https";

export interface NetbootDeps {
  /** STATE/boot/ */
  bootDir: string;
  /** The state dir, for the commands scripts tell an operator to run. */
  stateDir: string;
  db: Db;
  audit: Audit;
  log?: Logger;
  /** This server's advertised https:// base URLs (read at every request: the configuration may change). */
  baseUrls: () => string[];
  /** The port nodes are told for plain HTTP (config http-port, else 80). */
  httpPort: () => number;
  /** API URLs for the kernel command line (advertised, then peers). */
  apiUrls: () => string[];
  /** Site kernel parameters (config boot-cmdline). */
  cmdline: () => string | undefined;
}

const SCRIPT_HEADERS = {
  "Content-Type": "text/plain; charset=utf-8",
  "Cache-Control": "no-store",
  "X-Content-Type-Options": "nosniff",
};
/** Boot files may be replaced by `serve boot-files`: caches must revalidate (the ETag changes with the file). */
const BOOT_CACHE_CONTROL = "no-cache";

/** Strong ETag of a boot file as found: inode, size and mtime (a new install is a new inode). */
export function bootFileEtag(st: Stats): string {
  return `"${st.ino.toString(16)}-${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
}

/**
 * The base URLs (scheme://host[:port][/path]) under which a node reaches /boot/ when it came in over `scheme`: the
 * advertised https URLs, or for plain HTTP the same hosts on the http port (no path: the HTTP listener serves /boot/
 * at its root).
 */
export function bootBases(baseUrls: string[], scheme: BootScheme, httpPort: number): string[] {
  // A link-local URL carries no zone, which firmware cannot guess: last, used only when nothing else is configured.
  const ll = (u: string) => isLinkLocalHost(urlHostname(u));
  const ordered = [...baseUrls.filter((u) => !ll(u)), ...baseUrls.filter(ll)];
  if (scheme === "https") return ordered;
  const hosts = [...new Set(ordered.map(urlHostname))];
  return hosts.map((h) => `http://${urlHost(h)}${httpPort === 80 ? "" : `:${httpPort}`}`);
}

/**
 * The base a script points the node at: the one whose host the node asked for (its Host header names an address it
 * reached this server at), else the first. Only ever one of the configured bases: the Host header picks, never writes.
 */
export function pickBase(bases: string[], hostHeader: string | null): string | undefined {
  if (hostHeader) {
    const h = hostHeader.trim().toLowerCase();
    const hit = bases.find((b) => { try { return new URL(b).host === h || new URL(b).hostname === h; } catch { return false; } });
    if (hit) return hit;
  }
  return bases[0];
}

const script = (text: string, head: boolean) => new Response(head ? null : text, { status: 200, headers: { ...SCRIPT_HEADERS, "Content-Length": String(Buffer.byteLength(text)) } });

/**
 * Files shim asks for beside itself and GRUB's optional module lists under its prefix: none is needed, each is
 * answered 404 without an audit line (every Secure Boot network boot asks for them).
 */
const PROBED = new Set(["revocations_sku.efi", "revocations_sbat.efi", "shim_certificate_0.efi"]);
const GRUB_PREFIX = "/grub/";

/** Handles /boot/* and /grub/*; returns null for other paths. */
export async function serveNetboot(req: Request, remote: string, scheme: BootScheme, d: NetbootDeps): Promise<Response | null> {
  const url = new URL(req.url);
  // shim asks for its second stage as DIR + "/" + name, so a boot file URL of /boot/shimx64.efi gives /boot//grubx64.efi.
  const path = url.pathname.replace(/\/{2,}/g, "/");
  const grubPath = path.startsWith(GRUB_PREFIX);
  if (!path.startsWith(BOOT_URL_PREFIX) && path !== "/boot" && !grubPath) return null;
  const refused = (reason: string) => d.audit.record({ event: "boot", outcome: "refused", remote, reason: `${req.method} ${path.slice(0, 200)}: ${reason}` });
  if (req.method !== "GET" && req.method !== "HEAD") {
    refused("method not allowed");
    return new Response("method not allowed: /boot/ serves GET and HEAD only\n", { status: 405, headers: { ...SCRIPT_HEADERS, Allow: "GET, HEAD" } });
  }
  const head = req.method === "HEAD";
  if (path === IPXE_SCRIPT_PATH) return await bootScript(IPXE, url, req, remote, scheme, d, head);
  if (path === GRUB_SCRIPT_PATH) return await bootScript(GRUB, url, req, remote, scheme, d, head);
  // GRUB's config without a query: the generic script (GRUB cannot add one to its prefix).
  if (path === GRUB_CONFIG_PATH) return await bootScript(GRUB, new URL(GRUB_CONFIG_PATH, url), req, remote, scheme, d, head);

  const name = path.slice(grubPath ? GRUB_PREFIX.length : BOOT_URL_PREFIX.length);
  if (grubPath || PROBED.has(name)) return new Response(`not found: ${path.slice(0, 200)}\n`, { status: 404, headers: SCRIPT_HEADERS });
  if (!(BOOT_FILE_NAMES as string[]).includes(name)) {
    refused("not a boot file name");
    return new Response(`not found: /boot/ serves ${[...BOOT_FILE_NAMES, "ipxe", "grub"].join(", ")} (and ${GRUB_CONFIG_PATH})\n`, { status: 404, headers: SCRIPT_HEADERS });
  }
  return serveFile(req, {
    dir: d.bootDir, name, path, etag: bootFileEtag, cacheControl: BOOT_CACHE_CONTROL,
    // UEFI HTTP boot mounts a download as a RAM disk only when its type says it is a disk image (else it runs it).
    ...(name === "boot.img" ? { contentType: "application/vnd.efi-img" } : {}),
    onRefused: (reason, p, method) => d.audit.record({ event: "boot", outcome: "refused", remote, reason: `${method} ${p}: ${reason}` }),
  });
}

function missingBootFiles(bootDir: string): BootFileName[] {
  return (["vmlinuz", "initramfs"] as const).filter((n) => !existsSync(join(bootDir, n)));
}

async function bootScript(dialect: ScriptDialect, url: URL, req: Request, remote: string, scheme: BootScheme, d: NetbootDeps, head: boolean): Promise<Response> {
  const bases = bootBases(d.baseUrls(), scheme, d.httpPort());
  const base = pickBase(bases, req.headers.get("host"));
  if (!base) {
    d.audit.record({ event: "boot-script", outcome: "refused", remote, reason: "no advertised address" });
    return script(cannotBootScript("this server has no address to give a node (no advertised URL)",
      "on the server: airroot serve config add addresses ADDR (or advertise https://HOST)", dialect), head);
  }
  const missing = missingBootFiles(d.bootDir);
  if (missing.length) {
    d.audit.record({ event: "boot-script", outcome: "refused", remote, reason: `no ${missing.join(", ")} installed` });
    return script(cannotBootScript(`the server has no ${missing.join(" and no ")} to boot yet`,
      `on the server: airroot serve boot-files --state ${d.stateDir} --kernel dist/vmlinuz --initrd dist/initramfs.cpio.zst`, dialect), head);
  }
  const macs = url.searchParams.getAll("mac");
  const keys = [...url.searchParams.keys()];
  if (keys.length === 0) return script(chainScript(base, dialect), head);
  if (macs.length !== 1 || keys.length !== 1) {
    d.audit.record({ event: "boot-script", outcome: "refused", remote, reason: "query is not exactly one mac parameter" });
    return script(malformedMacScript(macs.length ? macs.join(",") : url.search.slice(1), dialect), head);
  }
  const mac = parseMacParam(macs[0].slice(0, 64));
  if (!mac) {
    d.audit.record({ event: "boot-script", outcome: "refused", remote, reason: "malformed MAC" });
    return script(malformedMacScript(macs[0], dialect), head);
  }
  const [name] = await nodesByIdentity(d.db, [mac]);
  const node = name ? await getNode(d.db, name) : null;
  if (!node) {
    d.audit.record({ event: "boot-script", outcome: "refused", remote, reason: `no node with MAC ${mac}` });
    return script(unknownMacScript(mac, dialect), head);
  }
  if (!head) d.audit.record({ event: "boot-script", outcome: "ok", remote, node: node.name, reason: `per-node ${dialect.name} script over ${scheme}, MAC ${mac}` });
  return script(nodeScript({ bootBase: base, apiUrls: d.apiUrls(), cmdline: d.cmdline() }, { name: node.name, mac, profile: node.profile, net: node.net }, dialect), head);
}

/**
 * The whole handler of the plain-HTTP listener: /boot/ only. The node API and the images need HTTPS (the site CA
 * authenticates the server, mutual TLS the nodes): refused with a message saying so, and audited.
 */
export function plainHttpHandler(d: NetbootDeps) {
  return async (req: Request, ctx: { remoteAddress: string }): Promise<Response> => {
    const r = await serveNetboot(req, ctx.remoteAddress, "http", d);
    if (r) return r;
    const path = new URL(req.url).pathname;
    const https = d.baseUrls()[0];
    const where = https ? ` at ${https}` : "";
    const api = path.startsWith("/api/"), images = path.startsWith("/images/");
    d.audit.record({ event: "http", outcome: "refused", remote: ctx.remoteAddress, reason: `${req.method} ${path.slice(0, 200)}: not served over plain HTTP` });
    const text = api || images
      ? `refused: ${api ? "the node API is" : "images are"} served over HTTPS only${where}; plain HTTP serves network boot files (/boot/) only\n`
      : `not found: plain HTTP serves network boot files (/boot/, ${GRUB_CONFIG_PATH}) only; the node API and images are on HTTPS${where}\n`;
    return new Response(text, { status: api || images ? 403 : 404, headers: SCRIPT_HEADERS });
  };
}
