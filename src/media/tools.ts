// The host tools a media build runs (GRUB, mtools, dosfstools, xorriso), each call named by its build step so an
// error says what failed, on what, and what to install or do.
import { existsSync } from "node:fs";

/** A media build failure: the step, the thing it worked on and what to do. */
export class MediaError extends Error {
  constructor(readonly step: string, message: string) {
    super(`media ${step}: ${message}`);
  }
}

/** The Debian package that provides each tool (scripts/deps.sh installs them all). */
const PACKAGES: Record<string, string> = {
  "grub-mkimage": "grub-common grub-pc-bin grub-efi-amd64-bin",
  xorriso: "xorriso",
  "mkfs.fat": "dosfstools",
  mmd: "mtools",
  mcopy: "mtools",
  mdir: "mtools",
};

/** Where GRUB's platform directories are (i386-pc for BIOS, x86_64-efi for UEFI). */
export const GRUB_LIB = "/usr/lib/grub";

export function requireFile(step: string, path: string, what: string, hint: string): void {
  if (!existsSync(path)) throw new MediaError(step, `${what} ${path} does not exist; ${hint}`);
}

/** Runs a tool to completion (bounded: 10 minutes); throws a MediaError naming the step on failure. */
export function runTool(step: string, cmd: string[], env: Record<string, string> = {}): string {
  let r;
  try {
    r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env }, timeout: 600_000 });
  } catch (e) {
    throw new MediaError(step, `cannot run ${cmd[0]} (${(e as Error).message}); apt-get install ${PACKAGES[cmd[0]] ?? cmd[0]} (or run scripts/deps.sh)`);
  }
  if (r.exitCode !== 0) {
    const err = (r.stderr.toString().trim() || r.stdout.toString().trim()).split("\n").slice(-6).join("\n  ");
    const how = r.exitCode === null ? "was stopped (timeout or signal)" : `failed (exit ${r.exitCode})`;
    throw new MediaError(step, `${cmd.join(" ")} ${how}:\n  ${err}`);
  }
  return r.stdout.toString();
}
