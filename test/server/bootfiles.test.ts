// `airroot serve boot-files`: STATE/boot/ installs are atomic per file (a reader during a reinstall sees the old or
// the new file whole, never a mix), a failed install changes nothing and leaves no temporary file, links are copied
// as real files, and the CLI lists what is there with sizes and says clearly what is missing or wrong.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, lstatSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { initState, statePaths } from "../../src/server/state.ts";
import { installBootFiles, listBootFiles } from "../../src/server/bootfiles.ts";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const BUN = join(import.meta.dir, "../../node_modules/.bin/bun");
let dir: string, state: string, boot: string;
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

function kernel(n: number): Buffer { const b = randomBytes(n); b.write("HdrS", 0x202, "latin1"); return b; }
function initrd(n: number): Buffer { return Buffer.concat([Buffer.from("070701"), randomBytes(n)]); }
const cli = (...a: string[]) => {
  const r = Bun.spawnSync([BUN, MAIN, "serve", "boot-files", ...a], { stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
};

beforeAll(async () => {
  dir = scratchDir();
  state = join(dir, "state");
  await initState(state, { addresses: ["10.0.2.100"] });
  boot = statePaths(state).boot;
}, 30_000);
afterAll(removeScratchDirs);

test("a reader during reinstalls always sees a whole old or whole new file; no temporary files stay", async () => {
  const versions = [kernel(8 << 20), kernel(8 << 20), kernel(8 << 20)];
  const digests = new Set(versions.map(sha));
  const i = initrd(1 << 20);
  writeFileSync(join(dir, "i"), i);
  versions.forEach((v, n) => writeFileSync(join(dir, `k${n}`), v));
  installBootFiles(state, { kernel: join(dir, "k0"), initrd: join(dir, "i"), ipxeDir: null });
  let stop = false, reads = 0;
  const reader = (async () => {
    while (!stop) {
      const got = readFileSync(join(boot, "vmlinuz"));
      expect(digests.has(sha(got))).toBe(true);
      reads++;
      await Bun.sleep(0);
    }
  })();
  for (let round = 0; round < 6; round++) {
    installBootFiles(state, { kernel: join(dir, `k${round % 3}`), initrd: join(dir, "i"), ipxeDir: null });
    await Bun.sleep(5);
  }
  stop = true;
  await reader;
  expect(reads).toBeGreaterThan(3);
  expect(readdirSync(boot).filter((f) => f.startsWith("."))).toEqual([]);
});

test("a failed install (the initramfs cannot be read) leaves the installed pair as it was", () => {
  const k = kernel(1 << 20), i = initrd(1 << 20);
  writeFileSync(join(dir, "ka"), k); writeFileSync(join(dir, "ia"), i);
  installBootFiles(state, { kernel: join(dir, "ka"), initrd: join(dir, "ia"), ipxeDir: null });
  writeFileSync(join(dir, "kb"), kernel(1 << 20));
  expect(() => installBootFiles(state, { kernel: join(dir, "kb"), initrd: join(dir, "missing"), ipxeDir: null })).toThrow(/boot-files: cannot read .*missing/);
  expect(() => installBootFiles(state, { kernel: join(dir, "kb"), initrd: dir, ipxeDir: null })).toThrow(/is not a regular file/);
  writeFileSync(join(dir, "empty"), "");
  expect(() => installBootFiles(state, { kernel: join(dir, "kb"), initrd: join(dir, "empty"), ipxeDir: null })).toThrow(/is empty/);
  expect(sha(readFileSync(join(boot, "vmlinuz")))).toBe(sha(k));
  expect(sha(readFileSync(join(boot, "initramfs")))).toBe(sha(i));
  expect(readdirSync(boot).filter((f) => f.startsWith("."))).toEqual([]);
});

test("a source that is a symlink is copied as a regular file (only regular files are served)", () => {
  const ipxe = join(dir, "ipxe");
  require("node:fs").mkdirSync(ipxe);
  writeFileSync(join(dir, "real.efi"), randomBytes(4096));
  symlinkSync(join(dir, "real.efi"), join(ipxe, "ipxe.efi"));
  writeFileSync(join(ipxe, "snponly.efi"), randomBytes(2048));
  const r = installBootFiles(state, { ipxeDir: ipxe });
  expect(r.installed.map((x) => x.name)).toEqual(["ipxe.efi", "snponly.efi"]);
  expect(r.warnings.join("\n")).toMatch(/undionly\.kpxe is missing: nodes that need undionly\.kpxe cannot boot through it/);
  expect(lstatSync(join(boot, "ipxe.efi")).isFile()).toBe(true);
  expect(listBootFiles(state).map((f) => f.name)).toEqual(["vmlinuz", "initramfs", "ipxe.efi", "snponly.efi"]);
});

test("the CLI: lists files and sizes, installs with Debian's iPXE, warns about files that do not look right, refuses half a pair", () => {
  const fresh = join(dir, "s2");
  expect(Bun.spawnSync([BUN, MAIN, "serve", "init", "--state", fresh, "--address", "10.0.2.100"]).exitCode).toBe(0);
  const empty = cli("--state", fresh);
  expect(empty.code).toBe(0);
  expect(empty.out).toContain(`${join(fresh, "boot")}: no boot files yet`);
  writeFileSync(join(dir, "kc"), kernel(3 << 20));
  writeFileSync(join(dir, "not-initrd"), randomBytes(1000));
  const r = cli("--state", fresh, "--kernel", join(dir, "kc"), "--initrd", join(dir, "not-initrd"));
  expect(r.code).toBe(0);
  expect(r.out).toMatch(/^installed vmlinuz \(3\.0 MiB\) from /m);
  expect(r.err).toContain("does not look like an initramfs");
  expect(r.out).toMatch(/^ {2}vmlinuz +3\.0 MiB +\d{4}-\d\d-\d\dT[\d:.]+Z +the kernel$/m);
  if (lstatSync("/usr/lib/ipxe/undionly.kpxe", { throwIfNoEntry: false })) expect(r.out).toMatch(/^ {2}undionly\.kpxe +[\d.]+ MiB/m);
  const half = cli("--state", fresh, "--kernel", join(dir, "kc"));
  expect(half.code).not.toBe(0);
  expect(half.err).toContain("give --kernel and --initrd together");
  const noState = cli("--state", join(dir, "nope"), "--kernel", join(dir, "kc"), "--initrd", join(dir, "not-initrd"));
  expect(noState.err).toContain("is not a server state dir; run `airroot serve init --state");
  const help = cli("--help");
  expect(help.code).toBe(0);
  expect(help.out).toContain("--ipxe-dir");
});

test("--uki installs a signed unified kernel image as airroot.efi (served under /boot/), alone, with no iPXE; a non-PE file is warned about", () => {
  const s3 = join(dir, "s3");
  expect(Bun.spawnSync([BUN, MAIN, "serve", "init", "--state", s3, "--address", "10.0.2.100"]).exitCode).toBe(0);
  const pe = Buffer.alloc(4096);
  pe.write("MZ", 0, "latin1");
  pe.writeUInt32LE(0x80, 0x3c);
  pe.write("PE\0\0", 0x80, "latin1");
  writeFileSync(join(dir, "uki.efi"), pe);
  const r = cli("--state", s3, "--uki", join(dir, "uki.efi"));
  expect(r.code).toBe(0);
  expect(r.err).toBe("");
  expect(r.out).toMatch(/^installed airroot\.efi \(0\.0 MiB\) from /m);
  expect(r.out).toMatch(/^ {2}airroot\.efi +0\.0 MiB .*signed unified kernel image/m);
  expect(readdirSync(statePaths(s3).boot).sort()).toEqual(["airroot.efi"]); // no iPXE unless asked or with a kernel
  expect(readFileSync(join(statePaths(s3).boot, "airroot.efi")).equals(pe)).toBe(true);
  writeFileSync(join(dir, "not.efi"), randomBytes(2000));
  const bad = cli("--state", s3, "--uki", join(dir, "not.efi"));
  expect(bad.code).toBe(0);
  expect(bad.err).toContain("does not look like an EFI executable (no MZ/PE header)");
});

test("--shim and --grub install the Secure Boot chain as shimx64.efi and grubx64.efi, only together; Debian 12's GRUB (no HTTP client) is warned about", () => {
  const s4 = join(dir, "s4");
  expect(Bun.spawnSync([BUN, MAIN, "serve", "init", "--state", s4, "--address", "10.0.2.100"]).exitCode).toBe(0);
  const pe = Buffer.alloc(4096);
  pe.write("MZ", 0, "latin1");
  pe.writeUInt32LE(0x80, 0x3c);
  pe.write("PE\0\0", 0x80, "latin1");
  const grub = Buffer.from(pe);
  grub.write("GET %s HTTP/1.1\r\n", 0x400, "latin1"); // GRUB's http module's request line
  writeFileSync(join(dir, "shim.efi"), pe);
  writeFileSync(join(dir, "grub.efi"), grub);
  const half = cli("--state", s4, "--shim", join(dir, "shim.efi"));
  expect(half.code).not.toBe(0);
  expect(half.err).toContain("give --shim and --grub together");
  expect(readdirSync(statePaths(s4).boot)).toEqual([]);
  const r = cli("--state", s4, "--shim", join(dir, "shim.efi"), "--grub", join(dir, "grub.efi"));
  expect(r.code).toBe(0);
  expect(r.err).toBe("");
  expect(r.out).toMatch(/^ {2}shimx64\.efi +0\.0 MiB .*Microsoft's UEFI CA/m);
  expect(r.out).toMatch(/^ {2}grubx64\.efi +0\.0 MiB .*signed network GRUB/m);
  expect(readdirSync(statePaths(s4).boot).sort()).toEqual(["grub", "grubx64.efi", "shimx64.efi"]);
  // For UEFI PXE: GRUB comes over TFTP and reads grub/grub.cfg from the TFTP root, which sends it on to HTTP.
  expect(readFileSync(join(statePaths(s4).boot, "grub/grub.cfg"), "utf8")).toContain('set root=(http,${net_default_server})\nsource "/boot/grub?mac=${net_default_mac}"\n');
  const noHttp = cli("--state", s4, "--shim", join(dir, "shim.efi"), "--grub", join(dir, "shim.efi"));
  expect(noHttp.code).toBe(0);
  expect(noHttp.err).toContain("has no HTTP client (Debian 12's signed network GRUB has none)");
  const deb12 = "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed";
  if (readFileSync("/etc/debian_version", "utf8").startsWith("12") && existsSync(deb12)) {
    expect(cli("--state", s4, "--shim", join(dir, "shim.efi"), "--grub", deb12).err).toContain("has no HTTP client");
  }
});

test("--img installs a FAT disk image as boot.img; a file without a boot sector signature is warned about", () => {
  const s5 = join(dir, "s5");
  expect(Bun.spawnSync([BUN, MAIN, "serve", "init", "--state", s5, "--address", "10.0.2.100"]).exitCode).toBe(0);
  const fat = Buffer.alloc(64 * 1024);
  fat[510] = 0x55; fat[511] = 0xaa;
  writeFileSync(join(dir, "boot.img"), fat);
  const r = cli("--state", s5, "--img", join(dir, "boot.img"));
  expect(r.code).toBe(0);
  expect(r.err).toBe("");
  expect(r.out).toMatch(/^ {2}boot\.img +0\.1 MiB .*RAM disk/m);
  writeFileSync(join(dir, "junk.img"), randomBytes(4096));
  expect(cli("--state", s5, "--img", join(dir, "junk.img")).err).toContain("does not look like a disk image (no boot sector signature)");
});
