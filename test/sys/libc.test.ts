import { afterAll, expect, test } from "bun:test";
import { mkdirSync, readFileSync, writeFileSync, openSync, closeSync } from "node:fs";
import { join } from "node:path";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import * as libc from "../../src/sys/libc";

afterAll(removeScratchDirs);

function mounted(path: string): boolean {
  return readFileSync("/proc/self/mounts", "utf8").split("\n").some((l) => l.split(" ")[1] === path);
}

test("errnoName and sysError format the step, thing and reason", () => {
  expect(libc.errnoName(1)).toBe("EPERM");
  expect(libc.errnoName(99999)).toBe("E99999");
  const e = libc.sysError("mount(fuse.airroot on /mnt/x)", 1);
  expect(e.message).toBe("mount(fuse.airroot on /mnt/x) failed: EPERM (Operation not permitted)");
  expect(e.errno).toBe(1);
  expect(e.code).toBe("EPERM");
  expect(e.syscall).toBe("mount");
});

test("chdir to a missing directory throws ENOENT with errno", () => {
  let err: any;
  try { libc.chdir("/nonexistent-airroot-dir"); } catch (e) { err = e; }
  expect(err?.code).toBe("ENOENT");
  expect(err?.errno).toBe(2);
  expect(err?.message).toBe("chdir(/nonexistent-airroot-dir) failed: ENOENT (No such file or directory)");
});

test("mount a tmpfs and umount2 it; bad fstype gives ENODEV", () => {
  const dir = join(scratchDir(), "mnt");
  mkdirSync(dir);
  libc.mount({ source: "airroot-test", target: dir, fstype: "tmpfs", flags: libc.MS_NOSUID, data: "size=1m" });
  try {
    expect(mounted(dir)).toBe(true);
    writeFileSync(join(dir, "f"), "x");
  } finally {
    libc.umount2(dir, libc.MNT_DETACH);
  }
  expect(mounted(dir)).toBe(false);
  expect(() => libc.mount({ source: "x", target: dir, fstype: "no-such-fs-type" })).toThrow(/ENODEV/);
  expect(() => libc.umount2(dir)).toThrow(/umount2\(.*\) failed: EINVAL/);
});

test("pivot_root and finit_module reach the kernel (errors expected)", () => {
  // pivot_root onto a non-mountpoint is refused (EINVAL or EBUSY): proves the call is wired with its arguments.
  const dir = scratchDir();
  expect(() => libc.pivotRoot(dir, dir)).toThrow(/pivot_root\(.*\) failed: (EINVAL|EBUSY)/);
  // A regular non-ELF file is not a module: ENOEXEC (or EINVAL on some kernels). A kernel built without module
  // support (no /proc/modules, like this lab's host) answers ENOSYS, which still proves the syscall number is right.
  const f = join(dir, "not-a-module.ko");
  writeFileSync(f, "not an elf file at all");
  const fd = openSync(f, "r");
  try {
    expect(() => libc.finitModule(fd, "", 0, f)).toThrow(/finit_module\(.*not-a-module.ko\) failed: (ENOEXEC|EINVAL|EBADMSG|ENOKEY|ENOSYS)/);
  } finally { closeSync(fd); }
});

test("ioctl on a non-tty fd fails with ENOTTY; prctl PR_SET_PDEATHSIG succeeds", () => {
  const fd = openSync("/dev/null", "r");
  try {
    // TCGETS = 0x5401 with a 64-byte buffer
    expect(() => libc.ioctl(fd, 0x5401, new Uint8Array(64))).toThrow(/ENOTTY/);
  } finally { closeSync(fd); }
  expect(libc.prctl(libc.PR_SET_PDEATHSIG, 0)).toBe(0);
});

test("setsid and execve work in a child process", () => {
  const script = `
    import * as libc from ${JSON.stringify(join(import.meta.dir, "../../src/sys/libc.ts"))};
    libc.setsid();
    libc.execve("/bin/sh", ["sh", "-c", "echo sid=$(ps -o sid= -p $$ | tr -d ' ') pid=$$ v=$AIRROOT_T"], { AIRROOT_T: "ok", PATH: "/usr/bin:/bin" });
  `;
  const r = Bun.spawnSync([process.execPath, "-e", script], { stdout: "pipe", stderr: "pipe" });
  const out = r.stdout.toString();
  const m = /sid=(\d+) pid=(\d+) v=ok/.exec(out);
  expect(m, out + r.stderr.toString()).not.toBeNull();
  expect(m![1]).toBe(m![2]); // session leader: sid == pid
});

test("execve of a missing file throws ENOENT", () => {
  expect(() => libc.execve("/nonexistent-airroot-bin", ["x"])).toThrow(/execve\(\/nonexistent-airroot-bin\) failed: ENOENT/);
});

test("pivot_root + chroot into a tmpfs inside a private mount namespace", () => {
  const dir = scratchDir();
  const script = `
    import * as libc from ${JSON.stringify(join(import.meta.dir, "../../src/sys/libc.ts"))};
    import { mkdirSync, writeFileSync, readdirSync } from "node:fs";
    const d = ${JSON.stringify(join(dir, "newroot"))};
    mkdirSync(d);
    libc.mount({ source: "none", target: "/", flags: libc.MS_REC | libc.MS_PRIVATE });
    libc.mount({ source: "airroot-pivot", target: d, fstype: "tmpfs" });
    mkdirSync(d + "/old"); writeFileSync(d + "/marker", "1");
    libc.pivotRoot(d, d + "/old");
    libc.chdir("/");
    console.log(JSON.stringify(readdirSync("/").sort()));
  `;
  const r = Bun.spawnSync(["unshare", "--mount", process.execPath, "-e", script], { stdout: "pipe", stderr: "pipe" });
  expect(r.stdout.toString().trim(), r.stderr.toString()).toBe(JSON.stringify(["marker", "old"]));
});
