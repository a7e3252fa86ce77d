// `make demo-mount`, the quick demo without a VM: a sample squashfs served by three nginx servers on loopback (127.0.0.2, 127.0.0.3, [::1]),
// mounted with `airroot mount`, loop-mounted, listed, `airroot status`, a server killed mid-way, then cleaned up.
// Loopback only; everything it starts is stopped and removed at the end, even on failure.
import { join } from "node:path";
import { mkdirSync, writeFileSync, existsSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../test/helpers/tmp";
import { makeTestPki } from "../test/helpers/pki";
import { startNginx, type Nginx } from "../test/helpers/nginx";
import { freePort } from "../test/helpers/ports";

const airroot = join(import.meta.dir, "..", "dist", "airroot");
const step = (msg: string) => console.log(`\n\x1b[1m== ${msg}\x1b[0m`);
function sh(cmd: string[], opts: { check?: boolean; quiet?: boolean } = {}): string {
  if (!opts.quiet) console.log(`$ ${cmd.join(" ")}`);
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "inherit" });
  const out = r.stdout.toString();
  if (!opts.quiet && out) process.stdout.write(out);
  if (opts.check !== false && r.exitCode !== 0) throw new Error(`${cmd[0]} failed (exit ${r.exitCode})`);
  return out;
}

if (!existsSync(airroot)) throw new Error(`${airroot} missing: run make first`);
const dir = scratchDir("airroot-demo-");
const servers: Nginx[] = [];
const mnt = join(dir, "mnt"), root = join(dir, "root");
let mounted = false, loopMounted = false;
try {
  step("1. Build a sample root image (squashfs, zstd)");
  const tree = join(dir, "tree");
  mkdirSync(join(tree, "etc"), { recursive: true });
  writeFileSync(join(tree, "etc", "os-release"), 'PRETTY_NAME="airroot demo image"\n');
  sh(["cp", "-a", "/usr/share/doc", join(tree, "doc")], { quiet: true });
  sh(["cp", "-a", "/usr/bin", join(tree, "bin")], { quiet: true });
  mkdirSync(join(dir, "www"));
  sh(["mksquashfs", tree, join(dir, "www", "rootimg.sfs"), "-comp", "zstd", "-quiet", "-no-progress"]);
  sh(["ls", "-l", join(dir, "www", "rootimg.sfs")]);

  step("2. Serve it from three nginx HTTPS servers on loopback (a site CA made with openssl)");
  const pki = makeTestPki(join(dir, "pki"));
  for (const host of ["127.0.0.2", "127.0.0.3", "::1"]) {
    const port = await freePort(host);
    servers.push(await startNginx({ root: join(dir, "www"), listen: [{ host, port }], cert: pki.serverCert, key: pki.serverKey, workDir: join(dir, `nginx-${servers.length}`) }));
  }
  const urls = servers.map((s) => s.urlFor("rootimg.sfs"));
  for (const u of urls) console.log(`  ${u}`);

  step("3. airroot mount (returns once mounted; a daemon keeps serving)");
  mkdirSync(mnt); mkdirSync(root);
  sh([airroot, "mount", "--ca", pki.caCert, ...urls, mnt]);
  mounted = true;
  sh(["ls", "-l", mnt]);

  step("4. Loop-mount the squashfs from the on-demand file and list it");
  sh(["mount", "-o", "loop,ro", join(mnt, "rootimg.sfs"), root]);
  loopMounted = true;
  sh(["ls", root]);
  sh(["cat", join(root, "etc", "os-release")]);

  step("5. airroot status");
  sh([airroot, "status", mnt]);

  step("6. Kill the server in use, then read every file: reads fail over without an error");
  servers[0].kill();
  sh(["sh", "-c", `find ${root} -type f -exec cat {} + | wc -c`]);
  sh([airroot, "status", mnt]);
  sh([airroot, "status", "--log", mnt]);
  console.log("\ndemo finished: cleaning up");
} finally {
  if (loopMounted) sh(["umount", root], { check: false, quiet: true });
  if (mounted) sh([airroot, "umount", mnt], { check: false });
  for (const s of servers) await s.stop().catch(() => {});
  removeScratchDirs();
}
