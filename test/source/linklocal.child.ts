// Child of linklocal.test.ts, run inside a fresh network namespace (unshare --net): a veth pair with link-local
// addresses, nginx on [::], and RemoteImage reaching it as https://[fe80::1%25v1]:PORT/img.bin. Prints one JSON line.
import { linkLocalVethPair } from "../helpers/netns";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { startNginx, type Nginx } from "../helpers/nginx";
import { crashNginx } from "../helpers/crash";
import { RemoteImage } from "../../src/source/image";
import { memoryLogger } from "../../src/util/log";

const [dir, certPath, keyPath, caPath] = process.argv.slice(2);
let ng: Nginx | undefined;
const out: Record<string, unknown> = {};
try {
  // Only inside this namespace: our own links and addresses.
  linkLocalVethPair();
  ng = await startNginx({ root: dir, listen: [{ host: "::", port: 8443 }], cert: certPath, key: keyPath, workDir: join(dir, "ng-netns") });
  const log = memoryLogger();
  const ca = readFileSync(caPath);
  const img = await RemoteImage.open(["https://[fe80::1%25v1]:8443/img.bin"], { ca, log });
  const bytes = await img.read(0, img.size);
  out.sha = createHash("sha256").update(bytes).digest("hex");
  out.log = log.lines;
  await img.close();
  // The zone may also be an interface index, as in the seed's "%253".
  const idx = /^(\d+):/.exec(Bun.spawnSync(["ip", "-o", "link", "show", "v1"]).stdout.toString())?.[1]; // (/sys is the host's)
  const byIndex = await RemoteImage.open([`https://[fe80::1%25${idx}]:8443/img.bin`], { ca, log });
  out.shaByIndex = createHash("sha256").update(await byIndex.read(0, byIndex.size)).digest("hex");
  await byIndex.close();
  try { await RemoteImage.open(["https://[fe80::1%25nosuchif]:8443/img.bin"], { ca, log }); out.badZone = "opened?!"; }
  catch (e) { out.badZone = (e as Error).message; }
} catch (e) {
  out.error = String((e as Error)?.stack ?? e);
} finally {
  if (ng) await crashNginx(ng);
}
console.log(JSON.stringify(out));
