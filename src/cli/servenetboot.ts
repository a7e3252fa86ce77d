// `airroot serve boot-files` (install or list STATE/boot/), `airroot serve dhcp-config dnsmasq|isc` and
// `airroot serve firmware-ca` (the site CA in the forms firmware takes, for HTTPS boot).
import { defineCommand } from "citty";
import { resolve } from "node:path";
import { installBootFiles, listBootFiles, DEBIAN_IPXE_DIR } from "../server/bootfiles.ts";
import { BOOT_FILES } from "../server/bootscript.ts";
import { dhcpConfig, type EfiBinary, type HttpBootTarget } from "../server/dhcpconfig.ts";
import { readConfig, statePaths } from "../server/state.ts";
import { advertisedUrls } from "../server/urls.ts";
import { pemCertificates, x509SignatureLists } from "../pki/esl.ts";
import { readFileSync, renameSync, writeFileSync } from "node:fs";

const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

function printPresent(stateDir: string): void {
  const present = listBootFiles(stateDir);
  const dir = statePaths(stateDir).boot;
  if (present.length === 0) { console.log(`${dir}: no boot files yet`); return; }
  console.log(`${dir}:`);
  const w = Math.max(...present.map((p) => p.name.length));
  for (const p of present) console.log(`  ${p.name.padEnd(w)}  ${mib(p.size).padStart(9)}  ${p.mtime.toISOString()}  ${BOOT_FILES[p.name]}`);
  const missing = (["vmlinuz", "initramfs"] as const).filter((n) => !present.some((p) => p.name === n));
  if (missing.length) console.log(`nodes cannot boot yet: no ${missing.join(" and no ")} (give --kernel and --initrd)`);
}

export const bootFilesCommand = defineCommand({
  meta: {
    name: "boot-files",
    description: "Install the network boot files served under /boot/ (kernel, initramfs, Debian's iPXE binaries, a signed UKI, shim + signed GRUB) into STATE/boot/, each atomically; without file options, list them",
  },
  args: {
    state: { type: "string", description: "server state directory (made by `airroot serve init`)", required: true },
    kernel: { type: "string", description: "the kernel, e.g. dist/vmlinuz (give --initrd with it: they are installed as a pair)" },
    initrd: { type: "string", description: "the initramfs, e.g. dist/initramfs.cpio.zst" },
    uki: { type: "string", description: "a signed unified kernel image from `airroot media uki`, served as /boot/airroot.efi (for `dhcp-config --http-boot uki`)" },
    img: { type: "string", description: "a FAT disk image from `airroot media img`, served as /boot/boot.img (for `dhcp-config --http-boot img`: UEFI HTTP boot mounts it as a RAM disk)" },
    shim: { type: "string", description: "shim signed by Microsoft's UEFI CA (dist/shimx64.efi from make initramfs: Debian 13's shim-signed), served as /boot/shimx64.efi (for `dhcp-config --http-boot shim`); give --grub with it" },
    grub: { type: "string", description: "Debian's signed network GRUB (dist/grubx64.efi from make initramfs: Debian 13's grubnetx64.efi.signed), served as /boot/grubx64.efi" },
    "ipxe-dir": { type: "string", description: `directory with undionly.kpxe, ipxe.efi and snponly.efi (default ${DEBIAN_IPXE_DIR} from Debian's ipxe package, when installing a kernel)` },
  },
  run({ args }) {
    const stateDir = resolve(args.state);
    if (!args.kernel !== !args.initrd) {
      throw new Error("serve boot-files: give --kernel and --initrd together (a kernel and the initramfs built for it are replaced as a pair)");
    }
    if (!args.kernel && !args["ipxe-dir"] && !args.uki && !args.img && !args.shim && !args.grub) { printPresent(stateDir); return; }
    const r = installBootFiles(stateDir, {
      kernel: args.kernel ? resolve(args.kernel) : undefined,
      initrd: args.initrd ? resolve(args.initrd) : undefined,
      ipxeDir: args["ipxe-dir"] ? resolve(args["ipxe-dir"]) : args.kernel ? undefined : null,
      uki: args.uki ? resolve(args.uki) : undefined,
      img: args.img ? resolve(args.img) : undefined,
      shim: args.shim ? resolve(args.shim) : undefined,
      grub: args.grub ? resolve(args.grub) : undefined,
    });
    for (const i of r.installed) console.log(`installed ${i.name} (${mib(i.size)}) from ${i.from}`);
    for (const w of r.warnings) console.error(`warning: ${w}`);
    printPresent(stateDir);
  },
});

export const dhcpConfigCommand = defineCommand({
  meta: {
    name: "dhcp-config",
    description: "Print a DHCP server configuration (dnsmasq or ISC dhcpd) for BIOS PXE, UEFI PXE and UEFI HTTP boot into airroot serve's iPXE script",
  },
  args: {
    kind: { type: "positional", description: "dnsmasq or isc", required: true },
    state: { type: "string", description: "server state directory (its advertised address and http-port go into the URLs)", required: true },
    range: { type: "string", description: "addresses to hand out, START,END[,NETMASK][,LEASE] (e.g. 10.0.2.50,10.0.2.150,255.255.255.0,12h); with --proxy the boot subnet, NETWORK[,NETMASK]", required: true },
    proxy: { type: "boolean", description: "dnsmasq as a proxy DHCP server beside the site's own (boot options only, no addresses; PXE clients only)" },
    interface: { type: "string", description: "serve DHCP on this interface only" },
    server: { type: "string", description: "IPv4 address nodes reach airroot serve's HTTP listener (and TFTP) at (default: the first IPv4 advertised address)" },
    "tftp-root": { type: "string", description: "directory the TFTP server serves undionly.kpxe and the EFI iPXE from (default STATE/boot; dnsmasq must be able to read it)" },
    "no-tftp": { type: "boolean", description: "dnsmasq: no TFTP server of its own; PXE ROMs are pointed at the TFTP server on --server" },
    efi: { type: "string", description: "what UEFI PXE loads over TFTP: snponly.efi (default: iPXE on the firmware's driver for the NIC it booted from), ipxe.efi (iPXE's own drivers) or shimx64.efi (Secure Boot: shim, Debian's signed GRUB, grub/grub.cfg from the TFTP root, then the per-node GRUB config over HTTP; needs `serve boot-files --shim --grub`)" },
    router: { type: "string", description: "default gateway handed out (full server only)" },
    "http-boot": { type: "string", description: `what UEFI HTTP boot loads: ipxe (default: the EFI iPXE, then the per-node script), uki (/boot/airroot.efi from \`serve boot-files --uki\`: a signed unified kernel image the firmware checks under Secure Boot), shim (/boot/shimx64.efi from \`serve boot-files --shim --grub\`: Debian's Secure Boot chain with Microsoft's keys, then the per-node GRUB config) or img (/boot/boot.img from \`serve boot-files --img\`: a FAT image the firmware mounts as a RAM disk)` },
    https: { type: "boolean", description: "HTTPS boot: UEFI HTTP boot and iPXE get https:// URLs (firmware with the site CA enrolled, an iPXE built with TRUST=ca.pem); PXE ROMs still get iPXE over TFTP" },
  },
  run({ args }) {
    const kind = args.kind;
    if (kind !== "dnsmasq" && kind !== "isc") throw new Error(`serve dhcp-config: "${String(kind).slice(0, 40)}" is not a DHCP server airroot writes for: use dnsmasq or isc`);
    const efi = args.efi ?? "snponly.efi";
    if (efi !== "snponly.efi" && efi !== "ipxe.efi" && efi !== "shimx64.efi") throw new Error(`serve dhcp-config: --efi "${efi.slice(0, 40)}": use snponly.efi, ipxe.efi or shimx64.efi (Secure Boot: shim, GRUB, then grub/grub.cfg from the TFTP root)`);
    const stateDir = resolve(args.state);
    const c = readConfig(stateDir);
    process.stdout.write(dhcpConfig({
      kind, advertised: advertisedUrls(c), httpPort: c.httpPort, mode: args.proxy ? "proxy" : "full", range: args.range,
      iface: args.interface, server: args.server, tftpRoot: resolve(args["tftp-root"] ?? statePaths(stateDir).boot),
      // citty reads --no-tftp as tftp=false
      tftp: !(args["no-tftp"] || (args as Record<string, unknown>).tftp === false), efiBinary: efi as EfiBinary, router: args.router, https: Boolean(args.https),
      httpBoot: args["http-boot"] as HttpBootTarget | undefined,
    }));
  },
});

export const firmwareCaCommand = defineCommand({
  meta: {
    name: "firmware-ca",
    description: "Write the site CA in a form firmware takes for HTTPS boot: esl (EFI signature list: edk2's TLS CA list, OVMF's fw_cfg etc/edk2/https/cacerts) or der (setup menus and BMC certificate pages)",
  },
  args: {
    state: { type: "string", description: "server state directory (made by `airroot serve init`)", required: true },
    format: { type: "string", description: "esl or der", default: "esl" },
    out: { type: "string", description: "output file (written whole, then renamed into place)", required: true },
  },
  run({ args }) {
    const format = args.format;
    if (format !== "esl" && format !== "der") throw new Error(`serve firmware-ca: --format "${String(format).slice(0, 40)}": use esl or der`);
    const paths = statePaths(resolve(args.state));
    let pem: string;
    try { pem = readFileSync(paths.siteCaCert, "utf8"); } catch {
      throw new Error(`serve firmware-ca: cannot read ${paths.siteCaCert}: is ${args.state} a server state dir (\`airroot serve init\`)?`);
    }
    const ders = pemCertificates(pem);
    const bytes = format === "esl" ? x509SignatureLists(ders) : ders[0]!;
    const out = resolve(args.out), tmp = `${out}.tmp.${process.pid}`;
    writeFileSync(tmp, bytes, { mode: 0o644 });
    renameSync(tmp, out);
    console.log(`wrote ${out}: the site CA as ${format === "esl" ? "an EFI signature list" : "DER"} (${bytes.length} bytes)`);
  },
});
