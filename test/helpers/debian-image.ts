// The Debian root image the systemd-level e2e tests boot (minbase + systemd, OpenSSH, NetworkManager), of the node
// kernel's suite (trixie by default, initramfs/fetch-kernel.sh): built once with mmdebstrap, squashfs'd into
// .cache/e2e/debian-root-SUITE.sfs with the digest of its /usr, and shared by every test that boots into systemd.
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { E2E_CACHE, kernelSuite } from "./boot";
import { scratchDir } from "./tmp";

/** The packages of the image; the README's walk-through packs the same list. */
export const DEBIAN_PACKAGES = "systemd-sysv,openssh-server,iproute2,udev,network-manager,procps";
/** sha256 over "sha256  path" of every regular file under usr/ (run from /), the booted system's airroot excepted. */
export const USR_DIGEST_CMD = "cd / && find usr -type f ! -path usr/local/sbin/airroot -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1";

/** Where the cached image of a suite and the digest of its /usr live. */
export function debianImagePaths(suite = kernelSuite()): { image: string; usrDigest: string; suite: string } {
  return { image: join(E2E_CACHE, `debian-root-${suite}.sfs`), usrDigest: join(E2E_CACHE, `debian-root-${suite}.usr.sha256`), suite };
}

function sh(cmd: string): string {
  const r = Bun.spawnSync(["sh", "-c", cmd], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/** The cached image of the suite (built now if missing, 1-2 min with a reachable Debian mirror). */
export function debianImage(suite = kernelSuite()): string {
  const { image, usrDigest } = debianImagePaths(suite);
  if (existsSync(image) && existsSync(usrDigest)) return image;
  const work = scratchDir("airroot-debian-");
  const tree = join(work, "tree");
  sh(`mmdebstrap --quiet --variant=minbase --include=${DEBIAN_PACKAGES} ${suite} ${tree}`);
  writeFileSync(join(tree, "etc/hostname"), "airroot-node\n");
  const digest = sh(USR_DIGEST_CMD.replace("cd /", `cd ${tree}`)).trim();
  mkdirSync(E2E_CACHE, { recursive: true });
  sh(`mksquashfs ${tree} ${image}.tmp.${process.pid} -comp zstd -noappend -quiet`);
  renameSync(`${image}.tmp.${process.pid}`, image);
  writeFileSync(usrDigest, digest + "\n");
  rmSync(tree, { recursive: true, force: true });
  return image;
}

if (import.meta.main) console.log(debianImage(process.argv[2] || undefined));
