// Boot scripts for network boot, in two dialects: iPXE's (GET /boot/ipxe[?mac=MAC]) and GRUB's (GET /grub/grub.cfg,
// then /boot/grub?mac=MAC: the Secure Boot chain shim -> Debian's signed GRUB, which reads its config from its
// prefix (http,SERVER)/grub). Each has the generic script that chains to the per-node one with the booting NIC's
// MAC, the per-node script (kernel + initramfs from this server, the node's kernel command line), and scripts that
// explain on the node's console why it cannot boot (unknown or malformed MAC, no boot files on the server) and then
// give the machine back to its firmware: never a hang, never a bare 404. Nothing from the request goes into a script
// unchecked: iPXE expands ${...} and runs `||`, `&&` in every line; GRUB expands $ and globs outside single quotes.
import { MAC_RE } from "./schema.ts";
import type { NodeNetwork } from "./store/nodes.ts";
import { bootOptions, CmdlineError, parseCmdline, strictHttpsUrl } from "../boot/cmdline.ts";
import { isLinkLocalHost, urlHostname } from "./urls.ts";

export const BOOT_URL_PREFIX = "/boot/";
export const IPXE_SCRIPT_PATH = "/boot/ipxe";
/** Where Debian's signed network GRUB looks first: its built-in prefix /grub on the server it was loaded from. */
export const GRUB_CONFIG_PATH = "/grub/grub.cfg";
export const GRUB_SCRIPT_PATH = "/boot/grub";
/** The file names served under /boot/ (from STATE/boot/), and what each is. */
export const BOOT_FILES = {
  vmlinuz: "the kernel",
  initramfs: "the initramfs (airroot init)",
  "undionly.kpxe": "iPXE for BIOS PXE (chain-loaded over TFTP, uses the NIC's UNDI driver)",
  "ipxe.efi": "iPXE for UEFI x86-64, with its own NIC drivers",
  "snponly.efi": "iPXE for UEFI x86-64 using the firmware's network driver (the NIC it booted from)",
  "airroot.efi": "a signed unified kernel image (airroot media uki) that UEFI HTTP boot loads directly (dhcp-config --http-boot uki)",
  "boot.img": "a FAT disk image (airroot media img) that UEFI HTTP boot mounts as a RAM disk and boots (dhcp-config --http-boot img)",
  "shimx64.efi": "shim signed by Microsoft's UEFI CA, the first step of the Secure Boot chain (dhcp-config --http-boot shim)",
  "grubx64.efi": "Debian's signed network GRUB, which shim loads from the same directory and which reads /grub/grub.cfg",
} as const;
export type BootFileName = keyof typeof BOOT_FILES;
export const BOOT_FILE_NAMES = Object.keys(BOOT_FILES) as BootFileName[];

/** How long a script that cannot boot the machine shows its message before it hands back to the firmware. */
export const GIVE_UP_SECONDS = 30;

/**
 * The interface a static node's address goes on in airroot.ip: the initramfs has no udev, so the kernel's own names
 * apply and the first NIC probed is eth0 (a node whose boot NIC is another one needs DHCP in the initramfs instead:
 * the server's config then moves the static address onto the boot interface).
 */
export const STATIC_IFACE = "eth0";

/** Characters allowed in site kernel parameters: no quoting, no ${...} expansion, no iPXE `||`, `&&` or comments. */
const PARAM_RE = /^[A-Za-z0-9._,:=/@+%~-]+$/;
/** Parameters the per-node script writes itself. */
const RESERVED = ["airroot.server", "airroot.ip", "initrd", "BOOT_IMAGE"];
/** x86's COMMAND_LINE_SIZE is 2048 bytes, the terminating NUL included. */
const MAX_CMDLINE = 2047;

/** Checks site kernel parameters (`serve config set boot-cmdline`); returns them with single spaces, or throws. */
export function checkBootCmdline(text: string): string {
  const words = text.trim().split(/\s+/).filter((w) => w);
  for (const w of words) {
    if (!PARAM_RE.test(w)) {
      throw new Error(`boot-cmdline: "${w.slice(0, 60)}" has a character iPXE or the kernel would read differently (allowed: letters, digits and . _ , : = / @ + % ~ -)`);
    }
    const name = w.split("=")[0].replace(/-/g, "_");
    if (RESERVED.some((r) => r.replace(/-/g, "_") === name)) {
      throw new Error(`boot-cmdline: ${w.split("=")[0]} is written by the per-node iPXE script itself (from the server's addresses and the node's record); leave it out`);
    }
  }
  const line = words.join(" ");
  try { bootOptions(parseCmdline(line)); } catch (e) {
    if (e instanceof CmdlineError) throw new Error(`boot-cmdline: ${e.message}`);
    throw e;
  }
  if (line.length > 1024) throw new Error("boot-cmdline: longer than 1024 characters");
  return line;
}

export interface ScriptServer {
  /** scheme://host[:port][/path] under which /boot/ is served to this client (from the advertised URLs). */
  bootBase: string;
  /** This site's API base URLs (advertised, then peers), for airroot.server. */
  apiUrls: string[];
  /** Site kernel parameters (config boot-cmdline). */
  cmdline?: string;
}

export interface ScriptNode { name: string; mac: string; profile: string; net: NodeNetwork }

/** Text for `echo`: only characters that iPXE and GRUB print as they are. */
const say = (s: string) => s.replace(/[^A-Za-z0-9 .,:/()_@=+%~-]/g, "?");

/** GRUB's quoting: single quotes, with ' written as '\'' (nothing inside single quotes is expanded). */
export const grubQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** What differs between the boot loaders' script languages. */
export interface ScriptDialect {
  /** For messages: "iPXE" or "GRUB". */
  name: string;
  /** The per-node script's path (with ?mac=MAC). */
  path: string;
  /** The generic script's path, which adds the MAC itself. */
  genericPath: string;
  /** What follows `boot` in the per-node script: GRUB goes on to the next line when loading fails, iPXE does not. */
  afterBoot: () => string;
  header(what: string): string;
  echo(text: string): string;
  /** The generic script: chain to the per-node one with the MAC of the boot NIC. */
  chain(bootBase: string): string;
  /** Load the kernel with these parameters and the initramfs from bootBase, and boot. */
  boot(bootBase: string, params: string[]): string[];
}

export const IPXE: ScriptDialect = {
  name: "iPXE",
  path: IPXE_SCRIPT_PATH,
  genericPath: IPXE_SCRIPT_PATH,
  afterBoot: () => "",
  header: (what) => `#!ipxe\n# airroot: ${what}\n`,
  echo: (text) => `echo airroot: ${say(text)}`,
  // ${netX/mac:hexhyp}: netX is the network device iPXE last opened (the boot NIC); hexhyp writes 52-54-00-12-34-56,
  // which needs no percent-encoding in a query (the server accepts colons too).
  chain: (bootBase) => `chain ${bootBase}${IPXE_SCRIPT_PATH}?mac=\${netX/mac:hexhyp}\n`,
  boot: (bootBase, params) => [
    // initrd=initramfs: the EFI stub finds the initrd iPXE loaded by this name.
    `kernel ${bootBase}/boot/vmlinuz ${["initrd=initramfs", ...params].join(" ")}`,
    `initrd --name initramfs ${bootBase}/boot/initramfs`,
    "boot",
  ],
};

export const GRUB: ScriptDialect = {
  name: "GRUB",
  path: GRUB_SCRIPT_PATH,
  genericPath: GRUB_CONFIG_PATH,
  afterBoot: () => giveUpLines(GRUB, ["GRUB could not load or start /boot/vmlinuz with /boot/initramfs (see the error above)"]),
  header: (what) => `# airroot: ${what}\n`,
  echo: (text) => `echo ${grubQuote(`airroot: ${say(text)}`)}`,
  // Paths without a device: GRUB's root is (http,SERVER), the server it loaded its config from (it has no TLS and
  // no port in its prefix, so that is this server's plain-HTTP listener on port 80). Double quotes: the variable is
  // expanded, the ? is not a wildcard. If the per-node config cannot be fetched, say so and give up.
  chain: () => `source "${GRUB_SCRIPT_PATH}?mac=\${net_default_mac}"\n` +
    giveUpLines(GRUB, ["the per-node GRUB config could not be fetched from this server (see the error above)"]),
  // Each parameter single-quoted: GRUB passes it through as it is (it adds BOOT_IMAGE= itself).
  boot: (_bootBase, params) => [`linux /boot/vmlinuz ${params.map(grubQuote).join(" ")}`, "initrd /boot/initramfs", "boot"],
};

/**
 * GRUB's config for UEFI PXE under Secure Boot, a static file in the TFTP root (grub/grub.cfg: GRUB's prefix is then
 * (tftp,SERVER)/grub): switch to HTTP on the same server, port 80, and fetch the per-node config from airroot serve.
 */
export function grubTftpConfig(): string {
  return GRUB.header("GRUB came over TFTP (UEFI PXE); the per-node config comes from airroot serve over HTTP on port 80 of this server") +
    "set root=(http,${net_default_server})\n" + GRUB.chain("");
}

function giveUpLines(d: ScriptDialect, lines: string[]): string {
  return [
    ...lines.map((l) => d.echo(l)),
    d.echo(`handing back to the firmware in ${GIVE_UP_SECONDS} s (next boot device)`),
    `sleep ${GIVE_UP_SECONDS}`,
    "exit 1",
    "",
  ].join("\n");
}

/** The generic script (no MAC): chain to the per-node script with the MAC of the NIC the loader booted from. */
export function chainScript(bootBase: string, d: ScriptDialect = IPXE): string {
  return d.header("find this machine's node by the MAC of its boot NIC") + d.chain(bootBase);
}

/** A MAC as iPXE or a person writes it (52:54:00:12:34:56, 52-54-00-12-34-56, upper case) in canonical form, or null. */
export function parseMacParam(v: string): string | null {
  const m = v.toLowerCase().replace(/-/g, ":");
  return MAC_RE.test(m) ? m : null;
}

/** The airroot.server URLs a node can use from its kernel command line (link-local ones need a zone: left out). */
function serverParam(urls: string[]): string | undefined {
  const ok = urls.filter((u) => {
    try { return !isLinkLocalHost(urlHostname(u)) && strictHttpsUrl("airroot.server", u) !== undefined; } catch { return false; }
  });
  return ok.length ? `airroot.server=${ok.join(",")}` : undefined;
}

/** airroot.ip for a node with a static IPv4 address; undefined for DHCP (or IPv6, which the server's config applies). */
function ipParam(net: NodeNetwork): string | undefined {
  if (net.mode !== "static") return undefined;
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(net.ip);
  if (!m) return undefined;
  const gw = net.gateway && /^\d{1,3}(\.\d{1,3}){3}$/.test(net.gateway) ? `:${net.gateway}` : "";
  return `airroot.ip=${STATIC_IFACE}:${m[1]}/${m[2]}${gw}`;
}

/** The kernel parameters the per-node script boots with (the loader may add its own: iPXE's initrd=, GRUB's BOOT_IMAGE=). */
export function nodeKernelParams(s: ScriptServer, n: ScriptNode): string[] {
  const parts: string[] = [];
  if (s.cmdline) parts.push(...s.cmdline.split(" ").filter((w) => w));
  const server = serverParam(s.apiUrls);
  if (server) parts.push(server);
  const ip = ipParam(n.net);
  if (ip) parts.push(ip);
  return parts;
}

/** The per-node script: this server's kernel and initramfs with the node's command line. */
export function nodeScript(s: ScriptServer, n: ScriptNode, d: ScriptDialect = IPXE): string {
  const params = nodeKernelParams(s, n);
  // The longest the loader makes it: iPXE adds initrd=initramfs, GRUB BOOT_IMAGE=/boot/vmlinuz.
  const length = ["BOOT_IMAGE=/boot/vmlinuz", ...params].join(" ").length;
  if (length > MAX_CMDLINE) {
    return d.header(`node ${n.name}`) + giveUpLines(d, [`the kernel command line for ${n.name} is ${length} bytes, more than the kernel takes (${MAX_CMDLINE})`, "shorten boot-cmdline or the advertised URLs"]);
  }
  const net = n.net.mode === "static" ? `static ${n.net.ip}` : "DHCP";
  return d.header(`node ${n.name} (${n.mac}), profile ${n.profile}, ${net}`) + [
    d.echo(`booting ${n.name} from ${s.bootBase}`),
    ...d.boot(s.bootBase, params),
    d.afterBoot(),
  ].join("\n");
}

/** No node has this MAC: say which MAC and how to register it. */
export function unknownMacScript(mac: string, d: ScriptDialect = IPXE): string {
  return d.header(`no node with MAC ${mac}`) + giveUpLines(d, [
    `no node is registered with the MAC ${mac} (the boot NIC of this machine)`,
    `on the server: airroot node add NAME --mac ${mac} --profile PROFILE, then airroot node arm NAME`,
  ]);
}

/** The mac parameter is not a MAC address (a hand-written URL, or an iPXE without ${netX/mac}). */
export function malformedMacScript(given: string, d: ScriptDialect = IPXE): string {
  const shown = given.replace(/[^0-9A-Za-z:.-]/g, "?").slice(0, 40);
  return d.header("malformed MAC") + giveUpLines(d, [
    `the boot script was asked for the MAC ${shown || "(empty)"}, which is not a MAC address like 52:54:00:12:34:56`,
    `chain the generic script instead: ${d.genericPath} (it adds the MAC of the boot NIC itself)`,
  ]);
}

/** The server cannot boot anything yet (no kernel or initramfs, or no advertised address). */
export function cannotBootScript(reason: string, fix: string, d: ScriptDialect = IPXE): string {
  return d.header(reason) + giveUpLines(d, [reason, fix]);
}
