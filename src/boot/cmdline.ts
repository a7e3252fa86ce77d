// Kernel command line parsing (/proc/cmdline) and the typed `airroot.*` boot options, with their documentation.
import { isIPv4 } from "node:net";
import { splitZone } from "../client/zone";

/** One `name[=value]` parameter as the kernel splits it; value is undefined for a bare flag. */
export interface Param {
  name: string;
  value: string | undefined;
}

export interface Cmdline {
  params: Param[];
  /** Arguments after a standalone `--`: the kernel hands them to init (we pass them on to /sbin/init). */
  initArgs: string[];
}

/** Longest command line we accept; the kernel's own limit (COMMAND_LINE_SIZE) is 2048 on x86 but 4096 elsewhere. */
const MAX_CMDLINE = 65536;

/**
 * Splits a command line the way the kernel's next_arg() does: whitespace separates parameters, double quotes group
 * (around the whole parameter or just its value) and are removed; an unterminated quote runs to the end of the line.
 */
export function parseCmdline(text: string): Cmdline {
  if (text.length > MAX_CMDLINE) throw new CmdlineError(`kernel command line is ${text.length} bytes, more than ${MAX_CMDLINE}`);
  const params: Param[] = [];
  const words: string[] = [];
  let i = 0;
  const n = text.length;
  const isSpace = (c: string) => c === " " || c === "\t" || c === "\n" || c === "\r" || c === "\v" || c === "\f";
  while (i < n) {
    while (i < n && isSpace(text[i])) i++;
    if (i >= n) break;
    let word = "";
    let inQuote = false;
    for (; i < n; i++) {
      const c = text[i];
      if (c === '"') { inQuote = !inQuote; continue; }
      if (!inQuote && isSpace(c)) break;
      word += c;
    }
    words.push(word);
  }
  const dash = words.indexOf("--");
  const own = dash < 0 ? words : words.slice(0, dash);
  const initArgs = dash < 0 ? [] : words.slice(dash + 1);
  for (const w of own) {
    const eq = w.indexOf("=");
    if (eq < 0) params.push({ name: w, value: undefined });
    else params.push({ name: w.slice(0, eq), value: w.slice(eq + 1) });
  }
  return { params, initArgs };
}

/** The kernel treats '-' and '_' in parameter names as the same character. */
function normName(name: string): string {
  return name.replace(/-/g, "_");
}

/** Value of the last occurrence of `name` (the kernel's rule for repeated parameters), or undefined. */
export function lastParam(c: Cmdline, name: string): Param | undefined {
  const want = normName(name);
  for (let i = c.params.length - 1; i >= 0; i--) if (normName(c.params[i].name) === want) return c.params[i];
  return undefined;
}

export class CmdlineError extends Error {
  override name = "CmdlineError";
}

export type ImageMethod = "ondemand" | "copy";

/** airroot.untether: keep fetching in the background into RAM or a local block device, then need no server. */
export type Untether = { to: "off" } | { to: "ram"; rateMBps?: number } | { to: "disk"; device: string; rateMBps?: number };

/** Static IPv4 settings for one interface. */
export interface StaticIp {
  iface: string;
  address: string; // dotted quad
  prefix: number;
  gateway?: string;
}

export interface BootOptions {
  servers: string[];
  shell: boolean;
  poweroff: boolean;
  imageMethod: ImageMethod;
  untether: Untether;
  /** "dhcp" (default), "none" (links up and IPv6 link-local only), or static settings. */
  ip: "dhcp" | "none" | StaticIp;
  dhcpTimeoutSec: number;
  modules: string[];
  blacklist: string[];
  overlaySize: string;
  rootImage: string | undefined;
  /** No TPM present: stop the boot (default) or enroll without one, loudly. */
  noTpm: "refuse" | "warn";
  /** Direct image URLs (mirrors of one file); only used when no server config names an image. */
  imageUrls: string[];
  manifestUrls: string[];
  init: string;
  skip: string[];
  debugSshd: boolean;
  debug: boolean;
  /** What a failed boot ends in: a console shell (default) or power off (tests, unattended benchmarks). */
  rescue: "shell" | "poweroff";
  /** How long the trust and root steps each wait for servers that are away; undefined = for ever. */
  rootTimeoutSec: number | undefined;
}

/** One documented option: the README's option table is generated from this list. */
export interface OptionDoc {
  name: string;
  syntax: string;
  default: string;
  description: string;
}

/** Every `airroot.*` kernel command line option. Repeated options: the last one wins. */
export const OPTION_DOCS: OptionDoc[] = [
  { name: "airroot.server", syntax: "URL[,URL...]", default: "(multicast discovery)",
    description: "Deployment servers (airroot serve) to enroll with and fetch the node config from, in order of preference; each an https:// base URL. Without it: the site's servers list in the initramfs, then multicast discovery." },
  { name: "airroot.notpm", syntax: "refuse|warn", default: "refuse",
    description: "Without a TPM (/dev/tpmrm0, /dev/tpm0): refuse to boot (the credential could not be kept, so every boot would need the node armed), or warn and enroll without one." },
  { name: "airroot.shell", syntax: "airroot.shell", default: "off",
    description: "Run every step but stop before switch_root: console shell plus the debug sshd on port 2222." },
  { name: "airroot.poweroff", syntax: "airroot.poweroff", default: "off",
    description: "Run every step, then power off instead of switch_root (tests and benchmarks)." },
  { name: "airroot.imagemethod", syntax: "ondemand|copy", default: "ondemand",
    description: "ondemand mounts the image over HTTPS and reads it lazily; copy downloads it into RAM first." },
  { name: "airroot.untether", syntax: "off|ram|disk:/dev/DEV", default: "off",
    description: "With ondemand and a signed manifest: once mounted, copy every chunk not yet read, verified, in the background (low priority, paused while servers fail) into RAM (initramfs tmpfs) or a local disk or partition (overwritten), then switch the root's loop device to the copy; from then on the node needs no image server. Reported as boot stage \"untethered\"." },
  { name: "airroot.untetherrate", syntax: "MB/s", default: "(no cap)",
    description: "With airroot.untether: cap the background fill at this many MB/s (decimal megabytes, e.g. 40 or 12.5), to leave the image servers and the network to booting nodes." },
  { name: "airroot.ip", syntax: "dhcp|none|IFACE:ADDR/PREFIX[:GATEWAY]", default: "dhcp",
    description: "IPv4 setup: DHCPv4 on every link with carrier, none, or static. IPv6 link-local is always on." },
  { name: "airroot.dhcptimeout", syntax: "SECONDS", default: "30",
    description: "How long DHCPv4 may take before the network step fails." },
  { name: "airroot.modules", syntax: "MOD[,MOD...]", default: "(none)",
    description: "Extra kernel modules to load after coldplug (with their dependencies)." },
  { name: "airroot.blacklist", syntax: "MOD[,MOD...]", default: "(none)",
    description: "Kernel modules never to load during coldplug." },
  { name: "airroot.roottimeout", syntax: "SECONDS", default: "(forever)",
    description: "How long the boot waits for servers that do not answer (refused, unreachable, 5xx), in the trust step (deployment servers) and again in the root step (image servers), retrying with backoff from 1 s to every 30 s and printing one line per change; then the step fails into the rescue shell. Without it a root filesystem waits for its servers." },
  { name: "airroot.overlaysize", syntax: "SIZE", default: "50%",
    description: "Size of the tmpfs holding the writable overlay (tmpfs size= syntax: 50%, 4g, ...)." },
  { name: "airroot.imageurl", syntax: "URL[,URL...]", default: "(from the server)",
    description: "https URLs of the root image on several servers (mirrors of one file), trusted through the site CA /etc/airroot/site/ca.pem. Used only when no server config names an image; given with no server configured (no airroot.server, no site servers list), the trust step is skipped: a boot without a deployment server." },
  { name: "airroot.manifest", syntax: "URL[,URL...]", default: "(none)",
    description: "https URLs of the image's signed manifest for airroot.imageurl (tried in order, so one dead server is no single point of failure); checked with /etc/airroot/site/image-key.pem, then every chunk against it. The server config's manifest wins." },
  { name: "airroot.rootimage", syntax: "PATH", default: "(from the servers)",
    description: "A squashfs file already present in the initramfs to use as the root image (tests, rescue)." },
  { name: "airroot.init", syntax: "PATH", default: "/sbin/init",
    description: "Program executed as PID 1 in the new root." },
  { name: "airroot.skip", syntax: "STEP[,STEP...]", default: "(none)",
    description: "Boot steps to skip by name (console, drivers, net, sshd, trust, ...), for test harnesses without hardware." },
  { name: "airroot.debugsshd", syntax: "on|off", default: "on",
    description: "Run the debug sshd on port 2222 in the initramfs environment." },
  { name: "airroot.rescue", syntax: "shell|poweroff", default: "shell",
    description: "After a failed step: a console shell plus the debug sshd, or power off (test harnesses)." },
  { name: "airroot.debug", syntax: "airroot.debug", default: "off",
    description: "Print more detail for each step." },
];

const KNOWN = new Set(OPTION_DOCS.map((o) => normName(o.name)));

function parseBool(p: Param | undefined, dflt: boolean): boolean {
  if (!p) return dflt;
  if (p.value === undefined || p.value === "") return true;
  const v = p.value.toLowerCase();
  if (["1", "yes", "on", "true", "y"].includes(v)) return true;
  if (["0", "no", "off", "false", "n"].includes(v)) return false;
  throw new CmdlineError(`${p.name}=${p.value}: expected on or off`);
}

function parseList(p: Param | undefined): string[] {
  if (!p || p.value === undefined) return [];
  return p.value.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IFNAME_CHARS = /^[A-Za-z0-9_.@-]{1,15}$/;
const MODNAME = /^[A-Za-z0-9_-]{1,64}$/;
const DNS_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/** Shown in messages: at most 200 characters of what the command line said, quoted. */
const show = (v: string) => JSON.stringify(v.length > 200 ? `${v.slice(0, 200)}…` : v);

/**
 * A Linux interface name the kernel would accept (dev_valid_name: 1-15 bytes, no '/', ':' or whitespace, not "." or
 * "..") and that needs no quoting anywhere: letters, digits and _ . @ -.
 */
export function validIfaceName(name: string): boolean {
  return IFNAME_CHARS.test(name) && name !== "." && name !== "..";
}

/** Whole seconds written as plain decimal digits: no sign, exponent, hex, fraction, spaces or leading zeros. */
function seconds(p: Param | undefined, max: number, what: string): number | undefined {
  if (!p) return undefined;
  const v = p.value ?? "";
  if (!/^(0|[1-9][0-9]{0,9})$/.test(v) || Number(v) > max) throw new CmdlineError(`${p.name}=${v}: ${what}`);
  return Number(v);
}

const URL_FORM = "https://HOST[:PORT][/PATH] with HOST a DNS name, a dotted IPv4 address or [IPv6] ([fe80::1%25eth0] for a link-local one)";

/**
 * One https URL from the command line, checked and returned as the URL parser reads it. A value the parser would read
 * differently from how it is written (https:10.0.0.1, https://10.1/, a ../ segment) or that carries user info, a query
 * or a fragment is refused rather than silently rewritten, so what the boot uses is what the command line shows. Only
 * the host's letter case and an explicit :443 are normalised away. Link-local zones are kept (written %25ZONE).
 */
export function strictHttpsUrl(option: string, raw: string): string {
  const bad = (why: string): never => { throw new CmdlineError(`${option}: ${show(raw)} ${why}; expected ${URL_FORM}`); };
  if (/[^\x21-\x7e]/.test(raw)) bad("contains a space, a control or a non-ASCII character");
  if (raw.includes("\\")) bad("contains a backslash");
  if (!raw.startsWith("https://")) bad("does not start with https://");
  const rest = raw.slice("https://".length);
  const cut = rest.search(/[/?#]/);
  const authority = cut < 0 ? rest : rest.slice(0, cut);
  const target = cut < 0 ? "" : rest.slice(cut);
  if (authority.includes("@")) {
    bad("carries user info (USER[:PASSWORD]@ before the host), which is refused: a password on the kernel command line is readable by every process, and user info hides which host is meant");
  }
  if (authority === "") bad("has no host");
  if (target.includes("#")) bad("has a fragment (#...)");
  if (target.includes("?")) bad("has a query (?...)");
  let split: ReturnType<typeof splitZone>;
  try { split = splitZone(raw); } catch { return bad("has a bad IPv6 address or zone"); }
  if (split.zone !== undefined && !validIfaceName(split.zone) && !/^[1-9][0-9]{0,9}$/.test(split.zone)) {
    bad(`names the zone ${show(split.zone)}, which is neither an interface name nor an interface index`);
  }
  let u: URL;
  try { u = new URL(split.url); } catch { return bad("is not a valid URL"); }
  const zoneless = split.url.slice("https://".length);
  const hostPort = zoneless.slice(0, cut < 0 ? undefined : zoneless.search(/[/?#]/));
  const host = u.hostname;
  // An IPv6 literal is checked by the comparison below (it must be written canonically, as the parser prints it).
  if (host.startsWith("[")) { /* see below */ }
  else if (/^[0-9.]+$/.test(host) || isIPv4(host)) { if (!IPV4.test(host)) bad("has a bad IPv4 address"); }
  else if (host.length > 253 || !host.split(".").every((l) => DNS_LABEL.test(l))) bad(`has a bad host name ${show(host)}`);
  if (u.port === "0") bad("names port 0");
  // The authority as written (host case aside, an explicit :443 aside) must be what the parser read; so must the path.
  const written = hostPort.toLowerCase().replace(/:443$/, "");
  const zoned = (h: string) => (split.zone === undefined ? h : `${h.slice(0, -1)}%25${split.zone}]`);
  if (written !== u.host) bad(`is read as https://${zoned(u.host)}${u.pathname === "/" && target === "" ? "" : u.pathname}: write it that way`);
  if (target !== "" && target !== u.pathname) bad(`has the path ${show(target)}, which is read as ${show(u.pathname)} (dot segments or characters that need percent-encoding): write ${show(u.pathname)}`);
  return `https://${zoned(host)}${u.port ? `:${u.port}` : ""}${target}`;
}

function parseIp(p: Param | undefined): BootOptions["ip"] {
  if (!p) return "dhcp";
  const v = p.value ?? "";
  if (v === "dhcp" || v === "none") return v;
  const form = "expected dhcp, none or IFACE:ADDR/PREFIX[:GATEWAY] (e.g. eth0:172.30.1.5/16:172.30.0.1)";
  const m = /^([^:]*):([^/:]+)\/(\d{1,2})(?::([^:]+))?$/.exec(v);
  if (m && !validIfaceName(m[1])) {
    throw new CmdlineError(`${p.name}=${v}: ${show(m[1])} is not an interface name (1-15 letters, digits, _ . @ -; not . or ..); ${form}`);
  }
  if (!m || !IPV4.test(m[2]) || Number(m[3]) > 32 || (m[4] !== undefined && !IPV4.test(m[4])))
    throw new CmdlineError(`${p.name}=${v}: ${form}`);
  return { iface: m[1], address: m[2], prefix: Number(m[3]), ...(m[4] ? { gateway: m[4] } : {}) };
}

/**
 * The typed boot options from a parsed command line. Invalid values throw CmdlineError naming the option;
 * unknown `airroot.*` names are returned in `unknown` (warned about, not fatal: an old initramfs must still boot).
 */
export function bootOptions(c: Cmdline): { options: BootOptions; unknown: string[] } {
  const get = (name: string) => lastParam(c, name);
  // Each URL as the parser reads it (strictHttpsUrl refuses any that would read differently from how it is written).
  const httpsList = (name: string): string[] => parseList(get(name)).map((s) => strictHttpsUrl(name, s));
  const servers = httpsList("airroot.server");
  const imageUrls = httpsList("airroot.imageurl");
  for (const u of imageUrls)
    if (new URL(splitZone(u).url).pathname.endsWith("/")) {
      throw new CmdlineError(`airroot.imageurl: ${show(u)} must name a file: https://HOST[:PORT]/PATH/FILE`);
    }
  const manifests = httpsList("airroot.manifest");
  const methodP = get("airroot.imagemethod");
  const imageMethod = (methodP?.value ?? "ondemand") as ImageMethod;
  if (imageMethod !== "ondemand" && imageMethod !== "copy")
    throw new CmdlineError(`airroot.imagemethod=${methodP?.value}: expected ondemand or copy`);
  const untether = parseUntether(get("airroot.untether"), get("airroot.untetherrate"));
  const dhcpTimeoutSec = seconds(get("airroot.dhcptimeout"), 3600,
    "expected whole seconds between 1 and 3600, in plain decimal digits (e.g. 30)") ?? 30;
  if (dhcpTimeoutSec < 1) throw new CmdlineError(`airroot.dhcptimeout=0: expected whole seconds between 1 and 3600, in plain decimal digits (e.g. 30)`);
  const rootTimeoutSec = seconds(get("airroot.roottimeout"), 31_536_000,
    "expected whole seconds (0 to 31536000) in plain decimal digits (e.g. 600); leave it out to wait for ever");
  const modules = parseList(get("airroot.modules"));
  const blacklist = parseList(get("airroot.blacklist"));
  for (const m of [...modules, ...blacklist])
    if (!MODNAME.test(m)) throw new CmdlineError(`airroot.modules/blacklist: "${m}" is not a module name`);
  const sizeP = get("airroot.overlaysize");
  const overlaySize = sizeP?.value ?? "50%";
  if (!/^\d{1,15}(%|[kKmMgG])?$/.test(overlaySize))
    throw new CmdlineError(`airroot.overlaysize=${overlaySize}: expected a tmpfs size such as 50% or 4g`);
  const pathOpt = (name: string): string | undefined => {
    const p = get(name);
    if (!p) return undefined;
    if (!p.value || !p.value.startsWith("/") || p.value.includes("\0"))
      throw new CmdlineError(`${name}=${p.value ?? ""}: expected an absolute path`);
    return p.value;
  };
  const noTpmP = get("airroot.notpm");
  const noTpm = (noTpmP?.value ?? "refuse") as BootOptions["noTpm"];
  if (noTpm !== "refuse" && noTpm !== "warn") throw new CmdlineError(`airroot.notpm=${noTpmP?.value ?? ""}: expected refuse or warn`);
  const options: BootOptions = {
    servers,
    noTpm,
    shell: parseBool(get("airroot.shell"), false),
    poweroff: parseBool(get("airroot.poweroff"), false),
    imageMethod,
    untether,
    ip: parseIp(get("airroot.ip")),
    dhcpTimeoutSec,
    modules,
    blacklist,
    overlaySize,
    rootImage: pathOpt("airroot.rootimage"),
    imageUrls,
    manifestUrls: manifests,
    init: pathOpt("airroot.init") ?? "/sbin/init",
    skip: parseList(get("airroot.skip")),
    debugSshd: parseBool(get("airroot.debugsshd"), true),
    debug: parseBool(get("airroot.debug"), false),
    rescue: rescueMode(c),
    rootTimeoutSec,
  };
  const unknown = [...new Set(c.params.map((p) => p.name).filter((n) => normName(n).startsWith("airroot.") && !KNOWN.has(normName(n))))];
  return { options, unknown };
}

function parseUntether(p: Param | undefined, rateP: Param | undefined): Untether {
  let rateMBps: number | undefined;
  if (rateP) {
    const r = rateP.value ?? "";
    // Plain decimal, at most 100 GB/s: nothing a shell or a unit suffix could make mean something else.
    if (!/^(0|[1-9][0-9]{0,5})(\.[0-9]{1,3})?$/.test(r) || Number(r) <= 0 || Number(r) > 100_000) {
      throw new CmdlineError(`airroot.untetherrate=${r}: expected MB/s as a plain decimal number above 0 (e.g. 40 or 12.5)`);
    }
    rateMBps = Number(r);
  }
  const v = p ? (p.value ?? "") : "off";
  if (v === "off") {
    if (rateMBps !== undefined) throw new CmdlineError(`airroot.untetherrate=${rateP!.value} needs airroot.untether=ram or disk:/dev/DEVICE`);
    return { to: "off" };
  }
  if (v === "ram") return { to: v, ...(rateMBps !== undefined ? { rateMBps } : {}) };
  const m = /^disk:(\/dev\/[A-Za-z0-9][A-Za-z0-9._\/-]{0,200})$/.exec(v);
  if (m && !m[1].split("/").includes("..")) return { to: "disk", device: m[1], ...(rateMBps !== undefined ? { rateMBps } : {}) };
  throw new CmdlineError(`airroot.untether=${v}: expected off, ram or disk:/dev/DEVICE (e.g. disk:/dev/nvme0n1p3; its contents are overwritten)`);
}

/** airroot.rescue, readable on its own so that even a command line with other bad options honours it. */
export function rescueMode(c: Cmdline): "shell" | "poweroff" {
  const p = lastParam(c, "airroot.rescue");
  if (!p) return "shell";
  if (p.value === "shell" || p.value === "poweroff") return p.value;
  throw new CmdlineError(`airroot.rescue=${p.value ?? ""}: expected shell or poweroff`);
}

/** `console=` parameters, last one is /dev/console. Returns e.g. {name:"ttyS0", baud:115200} or undefined. */
export function consoleFromCmdline(c: Cmdline): { name: string; baud?: number } | undefined {
  const p = lastParam(c, "console");
  if (!p || !p.value) return undefined;
  const m = /^([A-Za-z0-9_]+)(?:,(\d+))?/.exec(p.value);
  if (!m) return undefined;
  return m[2] ? { name: m[1], baud: Number(m[2]) } : { name: m[1] };
}

/** Module parameters given as `module.param=value` (the kernel leaves them for modprobe). */
export function moduleParams(c: Cmdline, module: string): string {
  const want = normName(module) + ".";
  const out: string[] = [];
  for (const p of c.params) {
    const n = normName(p.name);
    if (!n.startsWith(want) || n.length === want.length) continue;
    const key = p.name.slice(want.length);
    if (p.value === undefined) out.push(key);
    else out.push(/\s/.test(p.value) ? `${key}="${p.value}"` : `${key}=${p.value}`);
  }
  return out.join(" ");
}

/** The option table as Markdown, for the README. */
export function optionTableMarkdown(): string {
  const cell = (t: string) => t.replace(/\|/g, "\\|"); // a literal | would split the Markdown table cell
  const rows = OPTION_DOCS.map((o) => `| \`${o.name}\` | \`${cell(o.syntax)}\` | ${cell(o.default)} | ${cell(o.description)} |`);
  return ["| Option | Syntax | Default | Meaning |", "|---|---|---|---|", ...rows].join("\n");
}
