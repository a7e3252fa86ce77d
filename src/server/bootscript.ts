// iPXE scripts for network boot (GET /boot/ipxe[?mac=MAC], netboot.ts): the generic script that chains to the
// per-node one with the booting NIC's MAC, the per-node script (kernel + initramfs from this server, the node's
// kernel command line), and scripts that explain on the node's console why it cannot boot (unknown or malformed
// MAC, no boot files on the server) and then give the machine back to its firmware: never a hang, never a bare 404.
// Nothing from the request goes into a script unchecked: iPXE expands ${...} and runs `||`, `&&` in every line.
import { MAC_RE } from "./schema.ts";
import type { NodeNetwork } from "./store/nodes.ts";
import { bootOptions, CmdlineError, parseCmdline, strictHttpsUrl } from "../boot/cmdline.ts";
import { isLinkLocalHost, urlHostname } from "./urls.ts";

export const BOOT_URL_PREFIX = "/boot/";
export const IPXE_SCRIPT_PATH = "/boot/ipxe";
/** The file names served under /boot/ (from STATE/boot/), and what each is. */
export const BOOT_FILES = {
  vmlinuz: "the kernel",
  initramfs: "the initramfs (airroot init)",
  "undionly.kpxe": "iPXE for BIOS PXE (chain-loaded over TFTP, uses the NIC's UNDI driver)",
  "ipxe.efi": "iPXE for UEFI x86-64, with its own NIC drivers",
  "snponly.efi": "iPXE for UEFI x86-64 using the firmware's network driver (the NIC it booted from)",
  "airroot.efi": "a signed unified kernel image (airroot media uki) that UEFI HTTP boot loads directly (dhcp-config --http-boot uki)",
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

const header = (what: string) => `#!ipxe\n# airroot: ${what}\n`;

/** Text for `echo`: only characters that iPXE prints as they are. */
const say = (s: string) => s.replace(/[^A-Za-z0-9 .,:/()_@=+%~-]/g, "?");

function giveUp(lines: string[]): string {
  return [
    ...lines.map((l) => `echo airroot: ${say(l)}`),
    `echo airroot: handing back to the firmware in ${GIVE_UP_SECONDS} s (next boot device)`,
    `sleep ${GIVE_UP_SECONDS}`,
    "exit 1",
    "",
  ].join("\n");
}

/** GET /boot/ipxe without a MAC: chain to the per-node script with the MAC of the NIC iPXE booted from. */
export function chainScript(bootBase: string): string {
  // ${netX/mac:hexhyp}: netX is the network device iPXE last opened (the boot NIC); hexhyp writes 52-54-00-12-34-56,
  // which needs no percent-encoding in a query (the server accepts colons too).
  return header("find this machine's node by the MAC of its boot NIC") +
    `chain ${bootBase}${IPXE_SCRIPT_PATH}?mac=\${netX/mac:hexhyp}\n`;
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

/** The kernel command line the per-node script boots with. */
export function nodeKernelCmdline(s: ScriptServer, n: ScriptNode): string {
  const parts = ["initrd=initramfs"]; // the EFI stub finds the initrd iPXE loaded by this name
  if (s.cmdline) parts.push(s.cmdline);
  const server = serverParam(s.apiUrls);
  if (server) parts.push(server);
  const ip = ipParam(n.net);
  if (ip) parts.push(ip);
  return parts.join(" ");
}

/** The per-node script: this server's kernel and initramfs with the node's command line. */
export function nodeScript(s: ScriptServer, n: ScriptNode): string {
  const cmdline = nodeKernelCmdline(s, n);
  if (cmdline.length > MAX_CMDLINE) {
    return header(`node ${n.name}`) + giveUp([`the kernel command line for ${n.name} is ${cmdline.length} bytes, more than the kernel takes (${MAX_CMDLINE})`, "shorten boot-cmdline or the advertised URLs"]);
  }
  const net = n.net.mode === "static" ? `static ${n.net.ip}` : "DHCP";
  return header(`node ${n.name} (${n.mac}), profile ${n.profile}, ${net}`) + [
    `echo airroot: booting ${n.name} from ${s.bootBase}`,
    `kernel ${s.bootBase}/boot/vmlinuz ${cmdline}`,
    `initrd --name initramfs ${s.bootBase}/boot/initramfs`,
    "boot",
    "",
  ].join("\n");
}

/** No node has this MAC: say which MAC and how to register it. */
export function unknownMacScript(mac: string): string {
  return header(`no node with MAC ${mac}`) + giveUp([
    `no node is registered with the MAC ${mac} (the boot NIC of this machine)`,
    `on the server: airroot node add NAME --mac ${mac} --profile PROFILE, then airroot node arm NAME`,
  ]);
}

/** The mac parameter is not a MAC address (a hand-written URL, or an iPXE without ${netX/mac}). */
export function malformedMacScript(given: string): string {
  const shown = given.replace(/[^0-9A-Za-z:.-]/g, "?").slice(0, 40);
  return header("malformed MAC") + giveUp([
    `the boot script was asked for the MAC ${shown || "(empty)"}, which is not a MAC address like 52:54:00:12:34:56`,
    `chain the generic script instead: ${IPXE_SCRIPT_PATH} (it adds the MAC of the boot NIC itself)`,
  ]);
}

/** The server cannot boot anything yet (no kernel or initramfs, or no advertised address). */
export function cannotBootScript(reason: string, fix: string): string {
  return header(reason) + giveUp([reason, fix]);
}
