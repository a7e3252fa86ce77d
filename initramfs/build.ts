// Builds airroot's initramfs: dist/airroot as /init, kernel modules, busybox, sshd, site config, as a zstd cpio;
// with --stage1 the boot media's first stage instead (busybox, curl, zstd, the modules, initramfs/stage1.sh as /init:
// it fetches the full initramfs over HTTPS and checks it against the digest `airroot media` records on the media).
// Usage: bun initramfs/build.ts --kernel-dir .cache/kernel/VERSION --out dist/initramfs.cpio.zst [--site DIR]
//        [--airroot dist/airroot] [--level 19] [--modules a,b] [--stage1]
import { parseArgs } from "node:util";
import { cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { tmpdir } from "node:os";
import { CpioArchive } from "./cpio";
import { dependencyOrder, parseModulesDep } from "../src/boot/modules";

/**
 * Modules airroot itself needs, plus the NIC drivers of HPC servers and VMs; missing ones are skipped. A diskless
 * boot needs no storage driver; an untethered one (airroot.untether=disk:DEV) needs its local disk's. 55 modules (22.9 MB) before 2026-12-03; the NICs dropped then (igc, ixgbevf, iavf,
 * bnx2x, qede, mlx4_en, r8169, vmxnet3, hv_netvsc, ena, gve, sfc, be2net) and virtio_scsi (+scsi_mod) can be added
 * back with --modules or, at boot, only if present here.
 */
export const DEFAULT_MODULES = [
  "fuse", "overlay", "squashfs", "loop",
  // An encrypted image (image pack --encrypt): dm-crypt between the loop device and squashfs, loaded only for one.
  // Modules in trixie's 6.12 (AES and ECB built in; ECB a module in bookworm's 6.1); AES-NI pulls in cryptd, crypto_simd.
  "dm_mod", "dm_crypt", "xts", "ecb", "aesni_intel",
  "efivarfs", // not loaded unless asked (airroot.modules=efivarfs): the booted OS can then read EFI variables (SecureBoot)
  "virtio_pci", "virtio_net", "virtio_blk", "virtio_rng", "virtio_console",
  // Local disks for airroot.untether=disk:DEV (loaded only when such a controller is present).
  "nvme", "ahci", "sd_mod",
  "e1000", "e1000e", "igb", "ixgbe", "i40e", "ice", "bnxt_en", "tg3", "mlx5_core",
];

/** Busybox applets not to link: our /init must stay the only init. */
const SKIP_APPLETS = new Set(["init", "linuxrc", "busybox"]);

export interface BuildOptions {
  kernelDir: string;     // holds lib/modules/VERSION (as made by fetch-kernel.sh)
  out: string;           // .cpio.zst
  airroot: string;       // the compiled binary that becomes /init
  site?: string;         // optional site config directory, copied to /etc/airroot/site
  level?: number;        // zstd level (default 19)
  modules?: string[];    // module names; default DEFAULT_MODULES
  /** Extra host files: [hostPath, pathInInitramfs] (test images, tools). */
  add?: [string, string][];
  /** The boot media's first stage (initramfs/stage1.sh as /init, curl and zstd; no airroot, no sshd). */
  stage1?: boolean;
}

function fail(msg: string): never {
  throw new Error(`initramfs build: ${msg}`);
}

function run(cmd: string[]): string;
function run(cmd: string[], binary: true): Buffer;
function run(cmd: string[], binary = false): string | Buffer {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) fail(`${cmd.join(" ")} failed (exit ${r.exitCode}): ${r.stderr.toString().trim()}`);
  return binary ? r.stdout : r.stdout.toString();
}

/** Adds a host file at its canonical path, with every symlink on the way recreated (so /lib/x.so resolves). */
function addHostFile(a: CpioArchive, hostPath: string, mode?: number): void {
  let p = hostPath;
  for (let hops = 0; hops < 16; hops++) {
    // Recreate symlinked parent directories (usrmerge: /lib -> usr/lib) as symlinks.
    const parts = p.split("/").filter(Boolean);
    let prefix = "";
    let redirected = false;
    for (let i = 0; i < parts.length - 1; i++) {
      prefix += "/" + parts[i];
      const st = lstatSync(prefix);
      if (st.isSymbolicLink()) {
        if (!a.has(prefix)) a.add({ type: "symlink", path: prefix, target: readlinkSync(prefix) });
        p = join(realpathSync(prefix), ...parts.slice(i + 1));
        redirected = true;
        break;
      }
    }
    if (redirected) continue;
    const st = lstatSync(p);
    if (st.isSymbolicLink()) {
      const target = readlinkSync(p);
      if (!a.has(p)) a.add({ type: "symlink", path: p, target });
      p = target.startsWith("/") ? target : join(dirname(p), target);
      continue;
    }
    if (!a.has(p)) a.add({ type: "file", path: p, mode: mode ?? st.mode & 0o7777, data: readFileSync(p) });
    return;
  }
  fail(`too many symlinks resolving ${hostPath}`);
}

/** The shared libraries (and the loader) a dynamically linked host binary needs, from ldd. */
export function sharedLibraries(binary: string): string[] {
  const out = run(["ldd", binary]);
  const libs: string[] = [];
  for (const line of out.split("\n")) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]);
  }
  return libs;
}

function addTree(a: CpioArchive, hostDir: string, archiveDir: string): void {
  for (const name of readdirSync(hostDir)) {
    const h = join(hostDir, name), p = join(archiveDir, name);
    const st = lstatSync(h);
    if (st.isDirectory()) { a.add({ type: "dir", path: p, mode: st.mode & 0o7777 }); addTree(a, h, p); }
    else if (st.isSymbolicLink()) a.add({ type: "symlink", path: p, target: readlinkSync(h) });
    else if (st.isFile()) a.add({ type: "file", path: p, mode: st.mode & 0o7777, data: readFileSync(h) });
  }
}

/** Copies the wanted modules and their dependencies into a staging tree and lets depmod index just those. */
function stageModules(kernelDir: string, wanted: string[]): { stage: string; version: string; names: string[]; missing: string[] } {
  const modRoot = join(kernelDir, "lib/modules");
  const versions = existsSync(modRoot) ? readdirSync(modRoot) : [];
  if (versions.length !== 1) fail(`${modRoot} should hold exactly one kernel version, found ${versions.length}; run initramfs/fetch-kernel.sh`);
  const version = versions[0];
  const src = join(modRoot, version);
  const deps = parseModulesDep(readFileSync(join(src, "modules.dep"), "utf8"));
  const missing = wanted.filter((m) => !deps.has(m.replace(/-/g, "_")));
  const order = dependencyOrder(deps, wanted.filter((m) => deps.has(m.replace(/-/g, "_"))));
  const stage = mkdtempSync(join(tmpdir(), "airroot-initramfs-"));
  const dst = join(stage, "lib/modules", version);
  mkdirSync(dst, { recursive: true });
  for (const f of ["modules.builtin", "modules.builtin.modinfo", "modules.order"])
    if (existsSync(join(src, f))) cpSync(join(src, f), join(dst, f));
  for (const name of order) {
    const rel = deps.get(name)!.path;
    mkdirSync(dirname(join(dst, rel)), { recursive: true });
    // trixie ships .ko.xz. Stored plain: finit_module(2) takes them without MODULE_INIT_COMPRESSED_FILE, the cpio's
    // own zstd compresses them as well, and the signature Debian appends to the uncompressed module stays valid.
    const packed = /\.ko\.(xz|gz|zst)$/.exec(rel);
    if (packed) {
      const tool = { xz: "xz", gz: "gzip", zst: "zstd" }[packed[1] as "xz" | "gz" | "zst"];
      writeFileSync(join(dst, rel.slice(0, -packed[1].length - 1)), run([tool, "-dc", join(src, rel)], true));
    } else cpSync(join(src, rel), join(dst, rel));
  }
  run(["depmod", "-b", stage, version]);
  return { stage, version, names: order, missing };
}

/**
 * /init: a Bun executable cannot start without /proc (it reads its own code through /proc/self/exe), and the kernel
 * starts /init with no arguments and no /proc. So busybox mounts /proc, then exec (keeping PID 1) runs `airroot init`.
 * AIRROOT_CMDLINE replaces /proc/cmdline (test harnesses).
 */
const INIT_SCRIPT = `#!/usr/bin/busybox sh
/usr/bin/busybox mount -t proc -o nosuid,nodev,noexec proc /proc 2>/dev/null
exec /usr/bin/airroot init \${AIRROOT_CMDLINE:+"--cmdline=$AIRROOT_CMDLINE"}
`;

const PASSWD = "root:x:0:0:root:/root:/bin/sh\nsshd:x:100:65534:sshd privsep:/run/sshd:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP = "root:x:0:\nnogroup:x:65534:\n";
// '*' : no password login, but not "locked" ('!'), so key authentication works.
const SHADOW = "root:*:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n";

/** The udhcpc hook of the first stage: sets the leased address and the default route. */
const UDHCPC_SCRIPT = `#!/usr/bin/busybox sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/\${mask:-24}" dev "$interface"
    for r in $router; do ip route add default via "$r" dev "$interface"; break; done;;
  deconfig) ip addr flush dev "$interface";;
esac
exit 0
`;

function addBase(a: CpioArchive): void {
  // Base layout: usrmerged like the host so library paths from ldd stay valid.
  for (const d of ["usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "proc", "sys", "dev", "run", "root", "sysroot", "mnt", "etc/ssh", "var/empty", "var/log"])
    a.add({ type: "dir", path: d, mode: 0o755 });
  a.add({ type: "dir", path: "tmp", mode: 0o1777 });
  a.add({ type: "dir", path: "root", mode: 0o700 });
  for (const [l, t] of [["bin", "usr/bin"], ["sbin", "usr/sbin"], ["lib", "usr/lib"], ["lib64", "usr/lib64"]])
    a.add({ type: "symlink", path: l, target: t });
  // /dev/console must exist before devtmpfs is mounted so the kernel can give /init its stdio.
  a.add({ type: "char", path: "dev/console", mode: 0o600, major: 5, minor: 1 });
  a.add({ type: "char", path: "dev/null", mode: 0o666, major: 1, minor: 3 });
}

function addBusybox(a: CpioArchive): void {
  // busybox: console shell, ip, udhcpc (the DHCPv4 client), stty and friends.
  a.add({ type: "file", path: "usr/bin/busybox", mode: 0o755, data: readFileSync(realpathSync("/bin/busybox")) });
  if (!run(["file", "-L", "/bin/busybox"]).includes("statically linked")) fail("/bin/busybox is not static; apt-get install busybox-static");
  for (const applet of run(["/bin/busybox", "--list"]).split("\n").map((s) => s.trim()).filter(Boolean)) {
    if (SKIP_APPLETS.has(applet) || a.has(`usr/bin/${applet}`)) continue;
    a.add({ type: "symlink", path: `usr/bin/${applet}`, target: "busybox" });
  }
}

/** Host binaries with their shared libraries (a real tool replaces a busybox applet of the same name). */
function addHostTools(a: CpioArchive, bins: string[], pkg: string): void {
  for (const bin of bins) {
    if (!existsSync(bin)) fail(`${bin} not found; apt-get install ${pkg}`);
    for (const lib of sharedLibraries(bin)) addHostFile(a, lib);
    addHostFile(a, bin);
  }
}

function addAirroot(a: CpioArchive, airroot: string): void {
  a.add({ type: "file", path: "usr/bin/airroot", mode: 0o755, data: readFileSync(airroot) });
  // The kernel runs /init with no arguments; a two-line script selects the subcommand (exec keeps PID 1).
  a.add({ type: "file", path: "init", mode: 0o755, data: new TextEncoder().encode(INIT_SCRIPT) });
  // The Bun runtime links against glibc; bun:ffi dlopens libc.so.6 too.
  for (const lib of sharedLibraries(airroot)) addHostFile(a, lib);
  addBusybox(a);
  // OpenSSH server and key generator with their libraries.
  addHostTools(a, ["/usr/sbin/sshd", "/usr/bin/ssh-keygen", "/usr/lib/openssh/sftp-server"], "openssh-server openssh-client");
  a.add({ type: "file", path: "etc/passwd", data: new TextEncoder().encode(PASSWD) });
  a.add({ type: "file", path: "etc/group", data: new TextEncoder().encode(GROUP) });
  a.add({ type: "file", path: "etc/shadow", mode: 0o600, data: new TextEncoder().encode(SHADOW) });
  a.add({ type: "file", path: "etc/nsswitch.conf", data: new TextEncoder().encode("passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n") });
  a.add({ type: "file", path: "etc/shells", data: new TextEncoder().encode("/bin/sh\n") });
}

function addStage1(a: CpioArchive): void {
  a.add({ type: "file", path: "init", mode: 0o755, data: readFileSync(join(import.meta.dir, "stage1.sh")) });
  a.add({ type: "file", path: "etc/airroot/udhcpc.sh", mode: 0o755, data: new TextEncoder().encode(UDHCPC_SCRIPT) });
  addBusybox(a);
  addHostTools(a, ["/usr/bin/curl", "/usr/bin/zstd"], "curl zstd");
  a.add({ type: "file", path: "etc/nsswitch.conf", data: new TextEncoder().encode("hosts: files dns\n") });
}

export async function buildInitramfs(o: BuildOptions): Promise<{ bytes: number; entries: number; modules: string[]; missing: string[] }> {
  if (!o.stage1 && !existsSync(o.airroot)) fail(`${o.airroot} does not exist; build it first (bun run build.ts)`);
  const a = new CpioArchive();
  addBase(a);
  if (o.stage1) addStage1(a);
  else addAirroot(a, o.airroot);

  // Kernel modules: the requested set and their dependencies, indexed by depmod.
  const mods = stageModules(o.kernelDir, o.modules ?? DEFAULT_MODULES);
  try {
    addTree(a, join(mods.stage, "lib/modules"), "usr/lib/modules");
  } finally {
    rmSync(mods.stage, { recursive: true, force: true });
  }

  if (o.site) {
    if (!lstatSync(o.site).isDirectory()) fail(`--site ${o.site} is not a directory`);
    a.add({ type: "dir", path: "etc/airroot/site", mode: 0o755 });
    addTree(a, o.site, "etc/airroot/site");
  }

  for (const [src, dest] of o.add ?? []) {
    const st = lstatSync(src);
    if (st.isDirectory()) addTree(a, src, dest);
    else a.add({ type: "file", path: dest, mode: st.mode & 0o7777, data: readFileSync(src) });
  }

  mkdirSync(dirname(o.out), { recursive: true });
  const cpio = Buffer.concat(a.encode());
  // No --long: the kernel's zstd decompressor limits the window size.
  const z = Bun.spawn(["zstd", "-q", "-f", "-T0", `-${o.level ?? 19}`, "-o", o.out], { stdin: "pipe", stderr: "pipe" });
  z.stdin.write(cpio);
  await z.stdin.end();
  if ((await z.exited) !== 0) fail(`zstd failed: ${await new Response(z.stderr).text()}`);
  return { bytes: Bun.file(o.out).size, entries: a.size, modules: mods.names, missing: mods.missing };
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      "kernel-dir": { type: "string" },
      out: { type: "string", default: "dist/initramfs.cpio.zst" },
      site: { type: "string" },
      airroot: { type: "string", default: "dist/airroot" },
      level: { type: "string", default: "19" },
      modules: { type: "string" },
      add: { type: "string", multiple: true },
      stage1: { type: "boolean" },
      help: { type: "boolean" },
    },
  });
  if (values.help || !values["kernel-dir"]) {
    console.log("usage: bun initramfs/build.ts --kernel-dir DIR [--out dist/initramfs.cpio.zst] [--site DIR] [--airroot dist/airroot] [--level 19] [--modules a,b] [--add HOSTPATH=PATH]...\n" +
      "  --kernel-dir  a kernel directory from initramfs/fetch-kernel.sh (holds lib/modules/VERSION)\n" +
      "  --site        site config directory (CA, image key, server list) copied to /etc/airroot/site\n" +
      "  --modules     replace the default module list (dependencies are added automatically)\n" +
      "  --add         also put a host file or directory at PATH in the initramfs (repeatable)\n" +
      "  --stage1      the boot media's first stage: fetches the full initramfs over HTTPS (see `airroot media iso --help`)");
    process.exit(values.help ? 0 : 2);
  }
  try {
    const t0 = Date.now();
    const r = await buildInitramfs({
      kernelDir: values["kernel-dir"], out: values.out!, airroot: values.airroot!, site: values.site,
      level: Number(values.level), modules: values.modules?.split(",").filter(Boolean), stage1: values.stage1,
      add: (values.add ?? []).map((x) => {
        const eq = x.indexOf("=");
        if (eq <= 0) throw new Error(`--add ${x}: expected HOSTPATH=PATH`);
        return [x.slice(0, eq), x.slice(eq + 1)] as [string, string];
      }),
    });
    if (r.missing.length) console.log(`modules not in this kernel (skipped): ${r.missing.join(" ")}`);
    console.log(`built ${relative(".", values.out!)}: ${(r.bytes / 1048576).toFixed(1)} MiB, ${r.entries} entries, ` +
      `${r.modules.length} modules, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  } catch (e) {
    console.error((e as Error).message);
    process.exit(1);
  }
}
