// The Debian bookworm root image the systemd-level e2e tests boot (minbase + systemd, OpenSSH, NetworkManager):
// built once with mmdebstrap, squashfs'd into .cache/e2e/debian-root.sfs with the digest of its /usr, and shared
// by every test that boots into systemd (the same cache files test/e2e/systemd.test.ts builds).
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { E2E_CACHE } from "./boot";
import { scratchDir } from "./tmp";

export const DEBIAN_IMAGE = join(E2E_CACHE, "debian-root.sfs");
export const DEBIAN_USR_DIGEST = join(E2E_CACHE, "debian-root.usr.sha256");
/** sha256 over "sha256  path" of every regular file under usr/ (run from /), the booted system's airroot excepted. */
export const USR_DIGEST_CMD = "cd / && find usr -type f ! -path usr/local/sbin/airroot -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1";

function sh(cmd: string): string {
  const r = Bun.spawnSync(["sh", "-c", cmd], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/** The cached image (built now if missing, 1-2 min with a reachable Debian mirror). */
export function debianImage(): string {
  if (existsSync(DEBIAN_IMAGE) && existsSync(DEBIAN_USR_DIGEST)) return DEBIAN_IMAGE;
  const work = scratchDir("airroot-debian-");
  const tree = join(work, "tree");
  sh(`mmdebstrap --quiet --variant=minbase --include=systemd-sysv,openssh-server,iproute2,udev,network-manager,procps bookworm ${tree}`);
  writeFileSync(join(tree, "etc/hostname"), "airroot-node\n");
  const digest = sh(USR_DIGEST_CMD.replace("cd /", `cd ${tree}`)).trim();
  mkdirSync(E2E_CACHE, { recursive: true });
  sh(`mksquashfs ${tree} ${DEBIAN_IMAGE}.tmp.${process.pid} -comp zstd -noappend -quiet`);
  renameSync(`${DEBIAN_IMAGE}.tmp.${process.pid}`, DEBIAN_IMAGE);
  writeFileSync(DEBIAN_USR_DIGEST, digest + "\n");
  rmSync(tree, { recursive: true, force: true });
  return DEBIAN_IMAGE;
}

if (import.meta.main) console.log(debianImage());
