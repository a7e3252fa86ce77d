// switch_root: moves /dev /proc /sys /run into the new root, makes it / and executes its init. Never returns.
import { existsSync, lstatSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { chdir, chroot, execve, mount, MS_MOVE } from "../sys/libc";
import { mountPseudoFilesystems } from "./pseudofs";

export const MOVED_MOUNTS = ["/dev", "/proc", "/sys", "/run"];

export interface SwitchRootOptions {
  newRoot?: string;       // default /sysroot
  init?: string;          // path inside the new root, default /sbin/init
  args?: string[];        // extra arguments for init (from after "--" on the kernel command line)
  /**
   * Mount fresh /proc /sys /dev /run again in the initramfs after moving the originals, so processes that stay in the
   * initramfs environment (the debug sshd, the mount engine) still have them. Default true.
   */
  keepInitramfsEnv?: boolean;
  env?: Record<string, string>;
  /** Runs after the fresh initramfs /proc /sys /dev /run exist, before the root changes (recreate runtime dirs). */
  afterRemount?: () => void;
}

/** Checks everything that can be checked before the point of no return; throws with the reason. */
export function checkNewRoot(newRoot: string, init: string): void {
  if (!existsSync(newRoot)) throw new Error(`new root ${newRoot} does not exist`);
  try {
    // lstat: init is usually an absolute symlink (-> /lib/systemd/systemd) that only resolves inside the new root.
    lstatSync(join(newRoot, init));
  } catch {
    throw new Error(`${init} not found in the new root ${newRoot}: the image has no init`);
  }
}

export function switchRoot(o: SwitchRootOptions = {}): never {
  const newRoot = o.newRoot ?? "/sysroot";
  const init = o.init ?? "/sbin/init";
  checkNewRoot(newRoot, init);
  for (const m of MOVED_MOUNTS) {
    const target = join(newRoot, m);
    if (!existsSync(target)) mkdirSync(target, { recursive: true, mode: 0o755 });
    mount({ source: m, target, fstype: null, flags: MS_MOVE });
  }
  if (o.keepInitramfsEnv ?? true) {
    mountPseudoFilesystems("/");
    o.afterRemount?.();
  }
  chdir(newRoot);
  mount({ source: ".", target: "/", fstype: null, flags: MS_MOVE });
  chroot(".");
  chdir("/");
  return execve(init, [init, ...(o.args ?? [])], o.env ?? { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", TERM: "linux" });
}
