// `airroot serve site-config`: writes the site directory the initramfs carries (make initramfs SITE=DIR): the site
// CA, the image-signing public key, root's authorized keys and the list of server URLs.
import { defineCommand } from "citty";
import { chmodSync, copyFileSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { readConfig, statePaths, type ServerConfig } from "../server/state.ts";
import { imageKeyPaths } from "../image/keys.ts";
import { advertisedUrls, siteApiUrls } from "../server/urls.ts";

/**
 * The servers a node tries: this server's advertised URLs and its peers, exactly what `airroot serve` gives nodes.
 * Link-local URLs (https://[fe80::1]) are included: the node resolves them on its boot interface.
 */
export function siteServerUrls(c: ServerConfig): string[] {
  return siteApiUrls(advertisedUrls(c), c.peers);
}

/** Writes the site directory; returns the files written. */
export function writeSiteConfig(stateDir: string, out: string): string[] {
  const p = statePaths(stateDir);
  const c = readConfig(stateDir);
  const key = imageKeyPaths(stateDir).publicKey;
  for (const f of [p.siteCaCert, key])
    if (!existsSync(f)) throw new Error(`site-config: ${f} is missing; run \`airroot serve init --state ${stateDir}\` first`);
  mkdirSync(out, { recursive: true, mode: 0o755 });
  const written: string[] = [];
  const put = (name: string, fn: (dest: string) => void) => { const d = join(out, name); fn(d); chmodSync(d, 0o644); written.push(d); };
  put("ca.pem", (d) => copyFileSync(p.siteCaCert, d));
  put("image-key.pem", (d) => copyFileSync(key, d));
  if (c.rootAuthorizedKeys.length) put("authorized_keys", (d) => writeFileSync(d, c.rootAuthorizedKeys.map((k) => k.trim() + "\n").join("")));
  const urls = siteServerUrls(c);
  put("servers", (d) => writeFileSync(d, `# airroot deployment servers, in order of preference (airroot.server on the kernel command line wins)\n${urls.map((u) => u + "\n").join("")}`));
  return written;
}

export const siteConfigCommand = defineCommand({
  meta: {
    name: "site-config",
    description: "Write the site directory for the initramfs (ca.pem, image-key.pem, authorized_keys, servers): then `make initramfs SITE=DIR`",
  },
  args: {
    state: { type: "string", description: "server state directory (made by `airroot serve init`)", required: true },
    out: { type: "string", description: "directory to write (created if missing; files in it are replaced)", required: true },
  },
  run({ args }) {
    const files = writeSiteConfig(resolve(args.state), resolve(args.out));
    for (const f of files) console.log(`wrote ${f}`);
    console.log(`build the initramfs with: make initramfs SITE=${resolve(args.out)}`);
  },
});
