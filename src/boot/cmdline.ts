// Kernel command line parsing (/proc/cmdline) and the typed `airroot.*` boot options, with their documentation.
import { parseHttpsUrl } from "../client/zone";

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
const IFNAME = /^[A-Za-z0-9_.@-]{1,15}$/;
const MODNAME = /^[A-Za-z0-9_-]{1,64}$/;

function parseIp(p: Param | undefined): BootOptions["ip"] {
  if (!p) return "dhcp";
  const v = p.value ?? "";
  if (v === "dhcp" || v === "none") return v;
  const m = /^([^:]+):([^/:]+)\/(\d{1,2})(?::([^:]+))?$/.exec(v);
  if (!m || !IFNAME.test(m[1]) || !IPV4.test(m[2]) || Number(m[3]) > 32 || (m[4] !== undefined && !IPV4.test(m[4])))
    throw new CmdlineError(`${p.name}=${v}: expected dhcp, none or IFACE:ADDR/PREFIX[:GATEWAY] (e.g. eth0:172.30.1.5/16:172.30.0.1)`);
  return { iface: m[1], address: m[2], prefix: Number(m[3]), ...(m[4] ? { gateway: m[4] } : {}) };
}

/**
 * The typed boot options from a parsed command line. Invalid values throw CmdlineError naming the option;
 * unknown `airroot.*` names are returned in `unknown` (warned about, not fatal: an old initramfs must still boot).
 */
export function bootOptions(c: Cmdline): { options: BootOptions; unknown: string[] } {
  const get = (name: string) => lastParam(c, name);
  const httpsList = (name: string): string[] => {
    const list = parseList(get(name));
    for (const s of list) {
      let u: URL;
      try { u = parseHttpsUrl(s); } catch { throw new CmdlineError(`${name}: "${s}" is not a URL`); }
      if (u.protocol !== "https:") throw new CmdlineError(`${name}: "${s}" must be an https:// URL`);
    }
    return list;
  };
  const servers = httpsList("airroot.server");
  const imageUrls = httpsList("airroot.imageurl");
  for (const u of imageUrls)
    if (parseHttpsUrl(u).pathname.endsWith("/")) throw new CmdlineError(`airroot.imageurl: "${u}" must name a file`);
  const manifests = httpsList("airroot.manifest");
  const methodP = get("airroot.imagemethod");
  const imageMethod = (methodP?.value ?? "ondemand") as ImageMethod;
  if (imageMethod !== "ondemand" && imageMethod !== "copy")
    throw new CmdlineError(`airroot.imagemethod=${methodP?.value}: expected ondemand or copy`);
  const toP = get("airroot.dhcptimeout");
  const dhcpTimeoutSec = toP ? Number(toP.value) : 30;
  if (!Number.isInteger(dhcpTimeoutSec) || dhcpTimeoutSec < 1 || dhcpTimeoutSec > 3600)
    throw new CmdlineError(`airroot.dhcptimeout=${toP?.value}: expected whole seconds between 1 and 3600`);
  const rtP = get("airroot.roottimeout");
  const rootTimeoutSec = rtP ? Number(rtP.value) : undefined;
  if (rtP && (rtP.value === undefined || rtP.value === "" || !Number.isInteger(rootTimeoutSec) || rootTimeoutSec! < 0 || rootTimeoutSec! > 31_536_000))
    throw new CmdlineError(`airroot.roottimeout=${rtP.value ?? ""}: expected whole seconds (0 to 31536000); leave it out to wait for ever`);
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
