// `airroot serve dhcp-config dnsmasq|isc`: a DHCP server configuration for the three network boot paths into
// `airroot serve`'s iPXE script, each told apart by what the client sends:
//   iPXE (any build)   user class "iPXE" / option 175   -> http://SERVER:HTTPPORT/boot/ipxe (never a loader again: no loop)
//   UEFI HTTP boot     vendor class "HTTPClient" (arch 16) -> option 60 "HTTPClient" echoed back, URL of the EFI iPXE
//                      (or, with --http-boot uki, of the signed unified kernel image /boot/airroot.efi itself;
//                      with --http-boot shim, of /boot/shimx64.efi: shim -> signed GRUB -> /grub/grub.cfg)
//   UEFI PXE           client arch 7 or 9                -> the EFI iPXE over TFTP
//   BIOS PXE           anything else (arch 0)            -> undionly.kpxe over TFTP
// The files come from STATE/boot/ (`serve boot-files`): over TFTP (dnsmasq's own, or any TFTP server rooted there)
// for PXE ROMs, which speak nothing else, and from airroot serve's plain-HTTP listener for the rest.
import { parseIp } from "./netaddr.ts";
import { urlHostname } from "./urls.ts";
import { IPXE_SCRIPT_PATH } from "./bootscript.ts";

export type DhcpServerKind = "dnsmasq" | "isc";
/** What UEFI PXE loads over TFTP: an EFI iPXE, or shim (the Secure Boot chain: GRUB, then grub/grub.cfg from the TFTP root). */
export type EfiBinary = "snponly.efi" | "ipxe.efi" | "shimx64.efi";
/**
 * What UEFI HTTP boot loads: the EFI iPXE (then the per-node script), the signed UKI (`airroot media uki`), or
 * Debian's Secure Boot chain (shim signed by Microsoft's UEFI CA, then Debian's signed GRUB and kernel).
 */
export type HttpBootTarget = "ipxe" | "uki" | "shim" | "img";
export const SHIM_BOOT_FILE = "shimx64.efi";
/** `airroot media img`: the firmware mounts it as a RAM disk (by its Content-Type, application/vnd.efi-img) and boots it. */
export const IMG_BOOT_FILE = "boot.img";
export const UKI_BOOT_FILE = "airroot.efi";

export interface DhcpConfigOptions {
  kind: DhcpServerKind;
  /** IPv4 address of airroot serve's HTTP listener as nodes reach it; default the first IPv4 advertised host. */
  server?: string;
  /** The advertised URLs (to find `server`). */
  advertised: string[];
  /** config http-port (0: none; then this fails: firmware cannot fetch over HTTPS without a CA). */
  httpPort: number;
  /** full: this DHCP server hands out addresses (START,END[,NETMASK][,LEASE]); proxy: dnsmasq adds boot options to the site's DHCP (NETWORK[,NETMASK]). */
  mode: "full" | "proxy";
  range: string;
  iface?: string;
  /** Directory the TFTP server serves (STATE/boot/ or a copy a non-root TFTP server can read). */
  tftpRoot: string;
  /** false: leave TFTP to another server at `server` (dnsmasq then only points to it). Default true (dnsmasq). */
  tftp?: boolean;
  efiBinary?: EfiBinary;
  /** Default gateway handed out in full mode. */
  router?: string;
  /**
   * HTTPS boot: UEFI HTTP boot and iPXE are given https:// URLs on the advertised base (firmware with the site CA
   * enrolled, an iPXE built with it); PXE ROMs still get iPXE over TFTP.
   */
  https?: boolean;
  /** UEFI HTTP boot target; default ipxe. uki: the firmware loads /boot/airroot.efi and checks its Secure Boot signature. */
  httpBoot?: HttpBootTarget;
}

export class DhcpConfigError extends Error {
  constructor(msg: string) { super(`dhcp-config: ${msg}`); this.name = "DhcpConfigError"; }
}

const isV4 = (s: string) => { const ip = parseIp(s); return !!ip && !s.includes(":"); };

function v4(s: string, what: string): string {
  const t = s.trim();
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(t) || !isV4(t)) throw new DhcpConfigError(`${what} "${s.slice(0, 60)}" is not an IPv4 address`);
  return t;
}

const toInt = (ip: string) => ip.split(".").reduce((a, b) => a * 256 + Number(b), 0);
const toIp = (n: number) => [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join(".");

function netmask(s: string | undefined): string {
  const m = s === undefined ? "255.255.255.0" : v4(s, "netmask");
  const n = toInt(m);
  const bits = n.toString(2).padStart(32, "0");
  if (!/^1*0*$/.test(bits) || n === 0) throw new DhcpConfigError(`netmask ${m} is not a contiguous netmask like 255.255.255.0`);
  return m;
}

interface Range { start: string; end: string; mask: string; network: string; lease: string }

function parseRange(o: DhcpConfigOptions): Range {
  const parts = o.range.split(",").map((p) => p.trim());
  if (o.mode === "proxy") {
    if (parts.length > 2) throw new DhcpConfigError(`--range "${o.range}": with --proxy give the network of the boot subnet, NETWORK[,NETMASK], e.g. 10.0.2.0,255.255.255.0`);
    const net = v4(parts[0], "--range network");
    const mask = netmask(parts[1]);
    const network = toIp((toInt(net) & toInt(mask)) >>> 0);
    return { start: network, end: network, mask, network, lease: "" };
  }
  if (parts.length < 2 || parts.length > 4) throw new DhcpConfigError(`--range "${o.range}": give START,END[,NETMASK][,LEASE], e.g. 10.0.2.50,10.0.2.150,255.255.255.0,12h (or --proxy with the site's own DHCP server)`);
  const start = v4(parts[0], "--range start"), end = v4(parts[1], "--range end");
  const mask = netmask(parts[2] || undefined);
  const lease = parts[3] ?? "12h";
  if (!/^\d{1,7}[smhd]?$/.test(lease)) throw new DhcpConfigError(`--range lease "${lease}" is not a time like 12h, 30m or 3600`);
  const m = toInt(mask);
  const network = toIp((toInt(start) & m) >>> 0);
  if (((toInt(end) & m) >>> 0) !== ((toInt(start) & m) >>> 0)) throw new DhcpConfigError(`--range ${start} to ${end} is not inside one ${mask} subnet`);
  if (toInt(end) < toInt(start)) throw new DhcpConfigError(`--range ends (${end}) before it starts (${start})`);
  return { start, end, mask, network, lease };
}

function serverAddress(o: DhcpConfigOptions): string {
  if (o.server) return v4(o.server, "--server");
  const hosts = o.advertised.map((u) => { try { return urlHostname(u); } catch { return ""; } });
  const h = hosts.find((x) => /^\d{1,3}(\.\d{1,3}){3}$/.test(x));
  if (!h) {
    throw new DhcpConfigError(`no IPv4 address among the advertised URLs (${o.advertised.join(" ") || "none"}) for the boot file URLs: ` +
      "give --server IPV4 (the address nodes reach airroot serve's HTTP listener at), or `airroot serve config add addresses IPV4`");
  }
  return h;
}

function checkIface(i: string | undefined): string | undefined {
  if (i === undefined) return undefined;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/.test(i)) throw new DhcpConfigError(`--interface "${i.slice(0, 40)}" is not an interface name (at most 15 of letters, digits, . _ -)`);
  return i;
}

function checkDir(d: string): string {
  if (!d.startsWith("/") || /[\s"'\\#;,\x00-\x1f]/.test(d) || d.length > 400) throw new DhcpConfigError(`TFTP root "${d.slice(0, 80)}" must be an absolute path without spaces, quotes, ',' ';' '#' or '\\'`);
  return d;
}

/** The URLs and names a configuration hands out (for the printed comment and for tests). */
export function bootTargets(server: string, httpPort: number, efi: EfiBinary, httpsBase?: string, httpBoot: HttpBootTarget = "ipxe") {
  const base = httpsBase ?? `http://${server}${httpPort === 80 ? "" : `:${httpPort}`}`;
  const file = { uki: UKI_BOOT_FILE, shim: SHIM_BOOT_FILE, img: IMG_BOOT_FILE, ipxe: efi }[httpBoot];
  const httpBootEfi = `${base}/boot/${file}`;
  return { script: `${base}${IPXE_SCRIPT_PATH}`, httpBootEfi, biosPxe: "undionly.kpxe", efiPxe: efi };
}

export function dhcpConfig(o: DhcpConfigOptions): string {
  if (!o.httpPort && !o.https) {
    throw new DhcpConfigError("airroot serve has no plain-HTTP listener (config http-port is 0), and firmware and Debian's iPXE fetch boot files over HTTP: " +
      "`airroot serve config set http-port 80 --state DIR` (then restart airroot serve)");
  }
  const server = serverAddress(o);
  const r = parseRange(o);
  const iface = checkIface(o.iface);
  const tftpRoot = checkDir(o.tftpRoot);
  const efi = o.efiBinary ?? "snponly.efi";
  const router = o.router === undefined ? undefined : v4(o.router, "--router");
  let httpsBase: string | undefined;
  if (o.https) {
    // The advertised URL on the server's address if there is one, else the first (a name in the certificate).
    httpsBase = o.advertised.find((u) => { try { return urlHostname(u) === server; } catch { return false; } }) ?? o.advertised[0];
    if (!httpsBase) throw new DhcpConfigError("--https: no advertised https:// URL to give the firmware (`airroot serve config add addresses ADDR` or `add advertise https://HOST`)");
  }
  if (o.httpBoot !== undefined && !["ipxe", "uki", "shim", "img"].includes(o.httpBoot)) {
    throw new DhcpConfigError(`--http-boot "${String(o.httpBoot).slice(0, 40)}": use ipxe (the EFI iPXE, then the per-node script), uki (/boot/${UKI_BOOT_FILE}), shim (/boot/${SHIM_BOOT_FILE}, Debian's Secure Boot chain) or img (/boot/${IMG_BOOT_FILE}, a FAT image as a RAM disk)`);
  }
  if (o.httpBoot === "shim" && (o.https || o.httpPort !== 80)) {
    // GRUB's prefix is (http,HOST)/grub: plain HTTP on port 80 of the host shim came from, whatever the boot URL was.
    throw new DhcpConfigError(`--http-boot shim needs plain HTTP on port 80${o.https ? " (not --https)" : ` (http-port is ${o.httpPort})`}: Debian's signed GRUB fetches /grub/grub.cfg, the kernel and the initramfs from port 80 of the server shim was loaded from, without TLS; ` +
      "`airroot serve config set http-port 80 --state DIR` (then restart airroot serve)");
  }
  if (efi === "shimx64.efi" && o.httpPort !== 80) {
    throw new DhcpConfigError(`--efi shimx64.efi needs plain HTTP on port 80 (http-port is ${o.httpPort}): GRUB's config in the TFTP root fetches the per-node config from port 80 of the TFTP server; ` +
      "`airroot serve config set http-port 80 --state DIR` (then restart airroot serve)");
  }
  const t = bootTargets(server, o.httpPort, efi, httpsBase, o.httpBoot);
  return o.kind === "dnsmasq" ? dnsmasq(o, { server, r, iface, tftpRoot, efi, router, t }) : isc(o, { server, r, iface, tftpRoot, efi, router, t });
}

const efiLabel = (efi: EfiBinary) => efi === "shimx64.efi" ? "airroot: shim for UEFI Secure Boot" : "airroot: iPXE for UEFI";

interface Ctx { server: string; r: Range; iface?: string; tftpRoot: string; efi: EfiBinary; router?: string; t: ReturnType<typeof bootTargets> }

function dnsmasq(o: DhcpConfigOptions, c: Ctx): string {
  const tftp = o.tftp ?? true;
  const L: string[] = [
    "# airroot network boot for dnsmasq: generated by `airroot serve dhcp-config dnsmasq`",
    `# BIOS PXE -> ${c.t.biosPxe} (TFTP), UEFI PXE (arch 7/9) -> ${c.t.efiPxe} (TFTP), UEFI HTTP boot -> ${c.t.httpBootEfi},`,
    `# then iPXE (user class "iPXE") -> ${c.t.script} -> the per-node script.`,
    "port=0                      # DHCP/TFTP only, no DNS",
  ];
  if (c.iface) L.push(`interface=${c.iface}`, "bind-interfaces");
  if (o.mode === "proxy") {
    L.push("# proxy DHCP: the site's DHCP server hands out the addresses, this one only the boot information (PXE clients).",
      "# UEFI HTTP boot needs the URL from the address-giving server: use the full mode, or set it there.",
      `dhcp-range=${c.r.network},proxy,${c.r.mask}`);
  } else {
    L.push(`dhcp-range=${c.r.start},${c.r.end},${c.r.mask},${c.r.lease}`);
    if (c.router) L.push(`dhcp-option=option:router,${c.router}`);
  }
  L.push(
    "log-dhcp",
    "",
    "# Who is asking: iPXE (any build: Debian's, a NIC's ROM, QEMU's) sends user class iPXE and option 175.",
    "dhcp-userclass=set:ipxe,iPXE",
    "dhcp-match=set:ipxe,175",
    "dhcp-match=set:efi64,option:client-arch,7",
    "dhcp-match=set:efi64,option:client-arch,9",
    "dhcp-vendorclass=set:httpclient,HTTPClient",
    "",
  );
  if (o.mode === "proxy") {
    L.push(
      "# iPXE: the generic script, which chains to the per-node one with the boot NIC's MAC.",
      `dhcp-boot=tag:ipxe,${c.t.script}`,
      "# PXE ROMs: iPXE first (over TFTP).",
      `pxe-service=tag:!ipxe,x86PC,"airroot: iPXE for BIOS",${c.t.biosPxe}${tftp ? "" : `,${c.server}`}`,
      `pxe-service=tag:!ipxe,X86-64_EFI,"${efiLabel(c.efi)}",${c.efi}${tftp ? "" : `,${c.server}`}`,
      `pxe-service=tag:!ipxe,BC_EFI,"${efiLabel(c.efi)}",${c.efi}${tftp ? "" : `,${c.server}`}`,
    );
  } else {
    // dnsmasq uses the last dhcp-boot whose tags all match: the tag sets below never overlap.
    const srv = tftp ? "" : `,,${c.server}`;
    L.push(
      "# iPXE: the generic script, which chains to the per-node one with the boot NIC's MAC.",
      `dhcp-boot=tag:ipxe,${c.t.script}`,
      "# UEFI HTTP boot: the firmware takes the offer only with option 60 HTTPClient echoed back.",
      "dhcp-option-force=tag:httpclient,tag:!ipxe,60,HTTPClient",
      `dhcp-boot=tag:httpclient,tag:!ipxe,${c.t.httpBootEfi}`,
      "# UEFI PXE: iPXE for UEFI over TFTP.",
      `dhcp-boot=tag:efi64,tag:!httpclient,tag:!ipxe,${c.efi}${srv}`,
      "# BIOS PXE: iPXE over the PXE ROM's UNDI driver, over TFTP.",
      `dhcp-boot=tag:!efi64,tag:!httpclient,tag:!ipxe,${c.t.biosPxe}${srv}`,
    );
  }
  if (tftp) {
    L.push("",
      "# TFTP for the PXE ROMs (they speak nothing else); dnsmasq runs as its own user: it must be able to read this",
      "# directory (STATE is 0700: give --tftp-root a copy, e.g. rsync -a STATE/boot/ /srv/tftp/).",
      "enable-tftp",
      `tftp-root=${c.tftpRoot}`);
  }
  return L.join("\n") + "\n";
}

function isc(o: DhcpConfigOptions, c: Ctx): string {
  if (o.mode === "proxy") throw new DhcpConfigError("ISC dhcpd cannot be a proxy DHCP server: give --range START,END for a full server, or use dnsmasq --proxy beside the site's DHCP server");
  const L: string[] = [
    "# airroot network boot for ISC dhcpd: generated by `airroot serve dhcp-config isc`",
    `# BIOS PXE -> ${c.t.biosPxe} (TFTP from ${c.server}, a TFTP server such as tftpd-hpa rooted at ${c.tftpRoot}),`,
    `# UEFI PXE (arch 7/9) -> ${c.t.efiPxe} (TFTP), UEFI HTTP boot -> ${c.t.httpBootEfi},`,
    `# then iPXE (user class "iPXE") -> ${c.t.script} -> the per-node script.`,
    "option client-arch code 93 = unsigned integer 16;",
    "option space ipxe;",
    "option ipxe-encap-opts code 175 = encapsulate ipxe;",
    "authoritative;",
    "",
    `subnet ${c.r.network} netmask ${c.r.mask} {`,
    `  range ${c.r.start} ${c.r.end};`,
    ...(c.router ? [`  option routers ${c.router};`] : []),
    `  next-server ${c.server};`,
    "  if exists user-class and option user-class = \"iPXE\" {",
    `    filename "${c.t.script}";`,
    "  } elsif exists ipxe-encap-opts {",
    `    filename "${c.t.script}";`,
    "  } elsif substring (option vendor-class-identifier, 0, 10) = \"HTTPClient\" {",
    "    option vendor-class-identifier \"HTTPClient\";",
    `    filename "${c.t.httpBootEfi}";`,
    "  } elsif option client-arch = 00:07 or option client-arch = 00:09 {",
    `    filename "${c.efi}";`,
    "  } else {",
    `    filename "${c.t.biosPxe}";`,
    "  }",
    "}",
  ];
  const lease = /^(\d+)([smhd]?)$/.exec(c.r.lease);
  if (lease) {
    const secs = Number(lease[1]) * ({ "": 1, s: 1, m: 60, h: 3600, d: 86400 } as Record<string, number>)[lease[2]];
    L.splice(8, 0, `default-lease-time ${secs};`, `max-lease-time ${secs};`);
  }
  if (c.iface) L.unshift(`# serve only on ${c.iface}: run dhcpd with the interface name (INTERFACESv4="${c.iface}" in /etc/default/isc-dhcp-server)`);
  return L.join("\n") + "\n";
}
