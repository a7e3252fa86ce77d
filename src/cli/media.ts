// `airroot media iso|img|inspect`: boot media for BMC virtual media, USB sticks and UEFI HTTP boot (src/media/).
import { defineCommand } from "citty";
import { resolve } from "node:path";
import { hasDatabase, openDatabase } from "../server/store/db.ts";
import { getNode } from "../server/store/nodes.ts";
import { buildImg, buildIso, DEFAULT_CONSOLE, XCC_MEDIA_LIMIT, type MediaOptions } from "../media/build.ts";
import { formatInspection, inspectMedia } from "../media/inspect.ts";
import { MediaError } from "../media/tools.ts";
import { buildUki, formatUkiInspection, inspectUki, isUki } from "../media/uki.ts";

import { version } from "../version.ts";

/** airroot.ip for a node recorded with a static IPv4 address (`node add --ip A/P --gateway G`); undefined for DHCP. */
export async function nodeIpParam(state: string, name: string, iface: string): Promise<string | undefined> {
  if (!hasDatabase(resolve(state))) throw new MediaError("node", `${state} holds no airroot.db; --state is the directory \`airroot serve init\` made`);
  const db = await openDatabase(resolve(state));
  try {
    const n = await getNode(db, name.trim().toLowerCase());
    if (!n) throw new MediaError("node", `no node ${name} in ${state}; add it with \`airroot node add ${name} --mac ... --ip ADDR/PREFIX --state ${state}\``);
    if (n.net.mode !== "static") return undefined;
    const m = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(n.net.ip);
    if (!m) throw new MediaError("node", `node ${name}'s address ${n.net.ip} is not IPv4 ADDR/PREFIX: airroot.ip takes IPv4 only`);
    const gw = n.net.gateway && /^\d{1,3}(\.\d{1,3}){3}$/.test(n.net.gateway) ? `:${n.net.gateway}` : "";
    return `airroot.ip=${iface}:${m[1]}/${m[2]}${gw}`;
  } finally {
    await db.close();
  }
}

const common = {
  site: { type: "string", description: "site directory from `airroot serve site-config` (CA, image key, servers): put at /etc/airroot/site", required: true },
  out: { type: "string", description: "the file to write (replaced atomically; nothing is left behind on failure)", required: true },
  kernel: { type: "string", description: "the kernel", default: "dist/vmlinuz" },
  initrd: { type: "string", description: "the full airroot initramfs: on the media with --stages 1; with 2 the first stage fetches it from the servers' /boot/initramfs (install it there with `airroot serve boot-files`) and checks its SHA-256", default: "dist/initramfs.cpio.zst" },
  stage1: { type: "string", description: "the first stage for --stages 2 (`make media` builds it: initramfs/build.ts --stage1)", default: "dist/initramfs-stage1.cpio.zst" },
  cmdline: { type: "string", description: `kernel parameters (console, airroot.*); airroot.server from the site's servers and the node's airroot.ip are added (default "${DEFAULT_CONSOLE}")` },
  node: { type: "string", description: "bake this node's static address in (airroot.ip from its record; needs --state)" },
  state: { type: "string", description: "server state directory, for --node" },
  iface: { type: "string", description: "the interface --node's address goes on", default: "eth0" },
} as const;

interface BuildArgs {
  site: string; out: string; kernel: string; initrd: string; stage1: string; iface: string;
  cmdline?: string; node?: string; state?: string; stages?: string; "secure-boot"?: boolean;
}

async function build(kind: "iso" | "img", args: BuildArgs, defaultStages: 1 | 2): Promise<void> {
  const stages = args.stages === undefined ? defaultStages : Number(args.stages);
  if (stages !== 1 && stages !== 2) throw new MediaError("options", `--stages ${args.stages}: expected 1 or 2`);
  if (args.node && !args.state) throw new MediaError("options", "--node needs --state (the server state with the node's record)");
  const envEpoch = process.env.SOURCE_DATE_EPOCH;
  if (envEpoch !== undefined && !/^\d+$/.test(envEpoch)) throw new MediaError("options", `SOURCE_DATE_EPOCH=${envEpoch} is not whole seconds`);
  const nodeIp = args.node ? await nodeIpParam(args.state!, args.node, args.iface) : undefined;
  if (args.node && !nodeIp) console.log(`node ${args.node} uses DHCP: no airroot.ip baked in`);
  const o: MediaOptions = {
    kernel: resolve(args.kernel), initrd: resolve(args.initrd), stage1: resolve(args.stage1), stages, site: resolve(args.site),
    cmdline: args.cmdline, nodeIp, nodeName: args.node, out: resolve(args.out), version,
    secureBoot: args["secure-boot"] === true,
    epoch: envEpoch === undefined ? undefined : Number(envEpoch), log: (l) => console.log(`  ${l}`),
  };
  const t0 = Date.now();
  const r = await (kind === "iso" ? buildIso(o) : buildImg(o));
  console.log(`wrote ${r.out}: ${r.bytes} bytes (${(r.bytes / 1e6).toFixed(1)} MB) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  console.log(`command line: ${r.manifest.cmdline}`);
  if (r.manifest.stage2)
    console.log(`first stage fetches ${r.manifest.stage2.urlPath} (${r.manifest.stage2.size} bytes, sha256 ${r.manifest.stage2.sha256}) from the servers: ` +
      `install it with \`airroot serve boot-files --state STATE --kernel ${args.kernel} --initrd ${args.initrd}\``);
  if (kind === "iso" && r.bytes > XCC_MEDIA_LIMIT) console.log(`note: ${r.bytes} bytes is more than Lenovo XCC's 50 MB (${XCC_MEDIA_LIMIT} bytes) upload limit; --stages 2 keeps the media small`);
}

const isoCommand = defineCommand({
  meta: { name: "iso", description: "A hybrid boot image: a CD (BIOS El Torito, UEFI) and, written with dd, a USB disk (BIOS MBR, UEFI GPT/ESP), for BMC virtual media. Two stages by default (~20 MB: fits Lenovo XCC's 50 MB)" },
  args: {
    ...common,
    stages: { type: "string", description: "2: the media holds a small first stage that fetches the full initramfs over HTTPS (site CA) and checks its digest; 1: the full initramfs on the media", default: "2" },
    "secure-boot": { type: "boolean", description: "UEFI through Debian's signed shim and GRUB (shim-signed, grub-efi-amd64-signed): boots with Secure Boot enforcing; the kernel must be signed by Debian (bookworm's stock kernel is)" },
  },
  run: ({ args }) => build("iso", args as unknown as BuildArgs, 2),
});

const imgCommand = defineCommand({
  meta: { name: "img", description: "A FAT disk image with GRUB's BOOTX64.EFI, the kernel, the initramfs and grub.cfg: what UEFI HTTP boot mounts as a RAM disk (boot.img). One stage by default" },
  args: { ...common, stages: { type: "string", description: "1: the full initramfs in the image; 2: the small first stage (as for iso)", default: "1" } },
  run: ({ args }) => build("img", args as unknown as BuildArgs, 1),
});

const inspectCommand = defineCommand({
  meta: { name: "inspect", description: "Say what a media file holds: kernel version, initramfs sizes and digests, the second stage it fetches, command line, site CA fingerprint, boot methods; checked against its media.json" },
  args: {
    file: { type: "positional", description: "an .iso, .img or UKI .efi made by `airroot media`", required: true },
    json: { type: "boolean", description: "print JSON" },
  },
  run({ args }) {
    if (isUki(resolve(args.file))) {
      const u = inspectUki(resolve(args.file));
      console.log(args.json ? JSON.stringify(u, null, 2) : formatUkiInspection(u));
      if (u.mismatches.length) process.exit(3);
      return;
    }
    const r = inspectMedia(resolve(args.file));
    console.log(args.json ? JSON.stringify(r, null, 2) : formatInspection(r));
    if (r.mismatches.length) process.exit(3);
  },
});

const ukiCommand = defineCommand({
  meta: {
    name: "uki",
    description: "A signed unified kernel image: one EFI binary (systemd-boot's stub with kernel, initramfs, command line, os-release) signed with the site's Secure Boot key, so the firmware itself refuses a changed kernel, initramfs or command line. Boot it as \\EFI\\BOOT\\BOOTX64.EFI or from a boot entry; the firmware's db must hold --cert",
  },
  args: {
    key: { type: "string", description: "the Secure Boot signing key (unencrypted PEM, RSA) whose certificate is enrolled in the firmware's db", required: true },
    cert: { type: "string", description: "its certificate (PEM)", required: true },
    out: { type: "string", description: "the .efi file to write (replaced atomically; nothing is left behind on failure)", required: true },
    site: { type: "string", description: "site directory from `airroot serve site-config`: in the initramfs at /etc/airroot/site (needed for --stages 2)" },
    kernel: { type: "string", description: "the kernel (bookworm's is signed by Debian; here the UKI's signature covers it)", default: "dist/vmlinuz" },
    initrd: { type: "string", description: "the full airroot initramfs: in the image with --stages 1; with 2 the first stage fetches it from the servers' /boot/initramfs and checks its SHA-256 (recorded in the signed image)", default: "dist/initramfs.cpio.zst" },
    stage1: { type: "string", description: "the first stage for --stages 2 (`make media` builds it)", default: "dist/initramfs-stage1.cpio.zst" },
    stages: { type: "string", description: "2 (default with --site): the signed image holds the first stage and the full initramfs's digest, a chain of trust from the firmware to airroot init; 1 (default without --site): the full initramfs in the image" },
    cmdline: { type: "string", description: `kernel parameters, signed with the image (the stub ignores any other under Secure Boot); airroot.server from the site's servers is added (default "${DEFAULT_CONSOLE}")` },
    stub: { type: "string", description: "systemd-boot's EFI stub", default: "/usr/lib/systemd/boot/efi/linuxx64.efi.stub" },
  },
  async run({ args }) {
    const stages = args.stages === undefined ? (args.site ? 2 : 1) : Number(args.stages);
    if (stages !== 1 && stages !== 2) throw new MediaError("options", `--stages ${args.stages}: expected 1 or 2`);
    const envEpoch = process.env.SOURCE_DATE_EPOCH;
    if (envEpoch !== undefined && !/^\d+$/.test(envEpoch)) throw new MediaError("options", `SOURCE_DATE_EPOCH=${envEpoch} is not whole seconds`);
    const t0 = Date.now();
    const r = await buildUki({
      kernel: resolve(args.kernel), initrd: resolve(args.initrd), stage1: resolve(args.stage1), stages, site: args.site ? resolve(args.site) : undefined,
      cmdline: args.cmdline, key: resolve(args.key), cert: resolve(args.cert), out: resolve(args.out), version, stub: resolve(args.stub),
      epoch: envEpoch === undefined ? undefined : Number(envEpoch), log: (l) => console.log(`  ${l}`),
    });
    console.log(`wrote ${r.out}: ${r.bytes} bytes (${(r.bytes / 1e6).toFixed(1)} MB) in ${((Date.now() - t0) / 1000).toFixed(1)} s, signed by ${r.manifest.signer}, signing time ${new Date(r.signingTime * 1000).toISOString().replace(".000Z", "Z")}`);
    console.log(`command line: ${r.manifest.cmdline}`);
    if (r.manifest.stage2)
      console.log(`first stage fetches ${r.manifest.stage2.urlPath} (${r.manifest.stage2.size} bytes, sha256 ${r.manifest.stage2.sha256}) from the servers: ` +
        `install it with \`airroot serve boot-files --state STATE --kernel ${args.kernel} --initrd ${args.initrd}\``);
  },
});

export const mediaCommand = defineCommand({
  meta: { name: "media", description: "Boot media: hybrid ISO/USB image for BMC virtual media, FAT image for UEFI HTTP boot, signed unified kernel image, and what one holds" },
  subCommands: { iso: isoCommand, img: imgCommand, uki: ukiCommand, inspect: inspectCommand },
});
