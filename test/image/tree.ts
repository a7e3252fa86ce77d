// A small root-like tree for packing tests (not a test file itself).
import { join } from "node:path";
import { chmodSync, chownSync, mkdirSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";

/** A small root-like tree: owners other than root, a setuid file, a symlink, fixed mtimes. */
export function makeTree(dir: string, variant = "", bigBytes = 3 * 1024 * 1024 + 12345): string {
  mkdirSync(join(dir, "etc"), { recursive: true });
  mkdirSync(join(dir, "usr/bin"), { recursive: true });
  mkdirSync(join(dir, "var/lib/svc"), { recursive: true });
  writeFileSync(join(dir, "etc/hostname"), `node${variant}\n`);
  const big = new Uint8Array(bigBytes);
  let x = 7;
  for (let i = 0; i < big.length; i++) { x = (Math.imul(x, 1103515245) + 12345) >>> 0; big[i] = x >>> 24; } // incompressible
  writeFileSync(join(dir, "usr/bin/tool"), big);
  chmodSync(join(dir, "usr/bin/tool"), 0o4755);
  writeFileSync(join(dir, "var/lib/svc/state"), "owned by a service user\n");
  chownSync(join(dir, "var/lib/svc/state"), 33, 33);
  symlinkSync("../usr/bin/tool", join(dir, "etc/tool-link"));
  const t = new Date("2026-01-01T00:00:00Z");
  for (const p of ["etc/hostname", "usr/bin/tool", "var/lib/svc/state", "etc", "usr/bin", "usr", "var/lib/svc", "var/lib", "var", "."]) {
    utimesSync(join(dir, p), t, t);
  }
  return dir;
}

