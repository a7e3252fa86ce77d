// `airroot image pack|list|gc` and `airroot serve mirror-config` (exported for the serve command): thin commands
// over src/image and src/server/mirror.
import { defineCommand } from "citty";
import { resolve } from "node:path";
import { openDatabase } from "../server/store/db";
import { listImages, listProfiles } from "../server/store/images";
import { packImage, DEFAULT_CHUNK_SIZE } from "../image/pack";
import { gcImages, DEFAULT_GC_GRACE_MS } from "../image/gc";
import { checkImagesDir, mirrorConfig, DEFAULT_MIRROR_CERT, DEFAULT_MIRROR_KEY, MIRROR_CONF_PATHS, MIRROR_SERVERS, type MirrorServer } from "../server/mirror";
import { parseDuration, formatDuration } from "../util/duration";
import { checkStoredImages, strayEntries } from "../image/check";
import { assignProfile } from "../image/assign";
import { imagesDir } from "../image/paths";
import { imageKeyPaths } from "../image/keys";
import { existsSync, readFileSync } from "node:fs";
import { repeated, stateArg } from "./args.ts";



const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

const packCommand = defineCommand({
  meta: {
    name: "pack",
    description: "Pack ROOTDIR into a signed, content-addressed squashfs image (STATE/images/<sha256>.sfs + .manifest) and point PROFILE at it. Older images stay until `image gc`; re-packing an unchanged tree reuses the image (not with --encrypt: each encrypted pack has a new key, hence a new image).",
  },
  args: {
    rootdir: { type: "positional", description: "root filesystem tree to pack (e.g. made by mmdebstrap)", required: true },
    profile: { type: "string", description: "profile that will boot this image (letters, digits, . _ -)", required: true },
    state: stateArg,
    "chunk-size": { type: "string", description: `verification/fetch unit in KiB, a power of two (default ${DEFAULT_CHUNK_SIZE / 1024})` },
    "mkfs-time": { type: "string", description: "squashfs creation time in seconds since epoch (default 0, for reproducible images)" },
    encrypt: { type: "boolean", description: "encrypt the image with a new random key (dm-crypt aes-xts-plain64, 512-bit key, 4096-byte sectors): mirrors then hold only ciphertext; the key stays in STATE/image-keys/<sha256>.key (0600; back it up with the state dir) and only enrolled nodes get it, in their mutual-TLS config" },
  },
  async run({ args }) {
    const stateDir = resolve(args.state);
    const db = await openDatabase(ensureStateDir(stateDir));
    try {
      const chunkKiB = args["chunk-size"] === undefined ? undefined : Number(args["chunk-size"]);
      if (chunkKiB !== undefined && !Number.isInteger(chunkKiB)) throw new Error(`image pack: --chunk-size "${args["chunk-size"]}" is not a whole number of KiB`);
      const mkfsTime = args["mkfs-time"] === undefined ? undefined : Number(args["mkfs-time"]);
      if (mkfsTime !== undefined && !(Number.isInteger(mkfsTime) && mkfsTime >= 0 && mkfsTime < 2 ** 32)) {
        throw new Error(`image pack: --mkfs-time "${args["mkfs-time"]}" is not a time in seconds since epoch`);
      }
      const r = await packImage({
        rootDir: resolve(args.rootdir), profile: args.profile, stateDir, db,
        chunkSize: chunkKiB === undefined ? undefined : chunkKiB * 1024, mkfsTime,
        interactive: Boolean(process.stdout.isTTY), log: (l) => console.error(l), encrypt: Boolean(args.encrypt),
      });
      console.log(`${r.digest}  ${mib(r.size)}  profile ${args.profile}${r.manifest.encryption ? "  encrypted" : ""}${r.reused ? "  (unchanged tree: existing image reused)" : ""}  ${r.seconds.toFixed(1)} s`);
    } finally { await db.close(); }
  },
});

/** Opens the database of an existing state dir (list/gc must not create one by accident). */
async function openExisting(stateDir: string) {
  if (!existsSync(stateDir)) throw new Error(`state dir ${stateDir} does not exist: create it with \`airroot serve init\` or \`airroot image pack\``);
  return await openDatabase(stateDir);
}

function ensureStateDir(stateDir: string): string {
  require("node:fs").mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  return stateDir;
}

const listCommand = defineCommand({
  meta: { name: "list", description: "List stored images (newest first) and which profile currently points at each." },
  args: { state: stateArg, json: { type: "boolean", description: "machine-readable output" } },
  async run({ args }) {
    const db = await openExisting(resolve(args.state));
    try {
      const profiles = await listProfiles(db);
      const images = (await listImages(db)).map((i) => ({
        ...i, current: profiles.filter((p) => p.digest === i.digest).map((p) => p.name),
      }));
      if (args.json) { console.log(JSON.stringify({ images, profiles }, null, 2)); return; }
      if (images.length === 0) { console.log("no images; create one with `airroot image pack ROOTDIR --profile NAME`"); return; }
      console.log("DIGEST                                                            SIZE        CREATED                   PACKED FOR  CURRENT FOR");
      for (const i of images) {
        console.log(`${i.digest}  ${mib(i.size).padStart(10)}  ${new Date(i.created).toISOString().padEnd(24)}  ${i.profile.padEnd(10)}  ${i.current.join(",") || "-"}`);
      }
    } finally { await db.close(); }
  },
});

const gcCommand = defineCommand({
  meta: {
    name: "gc",
    description: "Remove images that no profile points at, that were packed before the grace period and that no node booted from within it; also leftovers of interrupted packs.",
  },
  args: {
    state: stateArg,
    grace: { type: "string", description: `grace period, e.g. 7d, 12h (default ${formatDuration(DEFAULT_GC_GRACE_MS)})` },
    "dry-run": { type: "boolean", description: "only print what would be removed" },
  },
  async run({ args }) {
    const graceMs = args.grace === undefined ? DEFAULT_GC_GRACE_MS : parseDuration(args.grace, "--grace");
    const stateDir = resolve(args.state);
    const db = await openExisting(stateDir);
    try {
      const r = await gcImages({ stateDir, db, graceMs, dryRun: args["dry-run"] });
      const verb = args["dry-run"] ? "would remove" : "removed";
      for (const d of r.removed) console.log(`${verb} ${d}`);
      for (const t of r.tmpRemoved) console.log(`${verb} leftover ${t}`);
      for (const k of r.kept) console.log(`kept ${k.digest}: ${k.why}`);
      console.log(`${verb} ${r.removed.length} image(s), ${mib(r.bytesFreed)}`);
    } finally { await db.close(); }
  },
});

const assignCommand = defineCommand({
  meta: {
    name: "assign",
    description: "Point a profile at an image that is already stored, e.g. to roll back to the previous one (nodes pick it up at their next boot; running nodes keep the image they booted).",
  },
  args: {
    digest: { type: "positional", description: "image digest, or a unique prefix of at least 8 hex digits", required: true },
    profile: { type: "string", description: "profile to point at it (created if new)", required: true },
    state: stateArg,
  },
  async run({ args }) {
    const stateDir = resolve(args.state);
    const db = await openExisting(stateDir);
    try {
      const before = await assignProfile({ stateDir, db, profile: args.profile, digest: args.digest });
      const now = (await listProfiles(db)).find((p) => p.name === args.profile)!.digest;
      console.log(`profile ${args.profile}: ${before ?? "(new)"} -> ${now}`);
    } finally { await db.close(); }
  },
});

const verifyCommand = defineCommand({
  meta: {
    name: "verify",
    description: "Check stored images against their signed manifests (signature, size, every chunk): on the server (--state) or on a mirror's copy (--images DIR --image-key PUB). Exits non-zero if any image is damaged.",
  },
  args: {
    state: { type: "string", description: "server state directory (uses STATE/images and STATE/keys/image.pub)" },
    images: { type: "string", description: "a directory of <sha256>.sfs/.manifest files, e.g. a mirror's copy" },
    "image-key": { type: "string", description: "image-signing public key (PEM); default STATE/keys/image.pub" },
  },
  run({ args }) {
    if (!args.state && !args.images) throw new Error("image verify: pass --state DIR or --images DIR --image-key PUB");
    const dir = resolve(args.images ?? imagesDir(args.state!));
    const keyFile = args["image-key"] ?? (args.state ? imageKeyPaths(resolve(args.state)).publicKey : undefined);
    if (!keyFile) throw new Error("image verify: --images needs --image-key (the public key nodes trust)");
    let key: string;
    try { key = readFileSync(keyFile, "utf8"); } catch (e) { throw new Error(`image verify: cannot read ${keyFile}: ${(e as Error).message}`); }
    if (!existsSync(dir)) throw new Error(`image verify: ${dir} does not exist`);
    const results = checkStoredImages(dir, key);
    for (const r of results) console.log(r.ok ? `ok      ${r.digest}` : `DAMAGED ${r.digest}: ${r.problem}`);
    const stray = strayEntries(dir);
    for (const e of stray) console.log(`${e.unsafe ? "UNSAFE " : "note   "} ${e.name}: ${e.problem}`);
    const bad = results.filter((r) => !r.ok).length, unsafe = stray.filter((e) => e.unsafe).length;
    console.log(`${results.length} image(s) checked, ${bad} damaged${unsafe ? `, ${unsafe} unsafe entr${unsafe === 1 ? "y" : "ies"}` : ""}`);
    if (bad || unsafe) process.exitCode = 1;
  },
});

export const imageCommand = defineCommand({
  meta: { name: "image", description: "Signed, content-addressed root images: pack, list, assign, verify, gc" },
  subCommands: { pack: packCommand, list: listCommand, assign: assignCommand, verify: verifyCommand, gc: gcCommand },
});

/** `airroot serve mirror-config nginx|apache|lighttpd|caddy`: the config on stdout, notes and warnings on stderr. */
export const mirrorConfigCommand = defineCommand({
  meta: {
    name: "mirror-config",
    description: `Print a config for stock nginx (save as ${MIRROR_CONF_PATHS.nginx}), Apache httpd (${MIRROR_CONF_PATHS.apache}), lighttpd (${MIRROR_CONF_PATHS.lighttpd}) or Caddy (${MIRROR_CONF_PATHS.caddy}) that serves an rsync'd copy of STATE/images (or STATE/images itself) as an image mirror: same URLs, byte ranges, immutable caching. Nodes verify every chunk against the signed manifest. lighttpd sends no ETag (it cannot send the digest), so nodes use it only with the manifest.`,
  },
  args: {
    server: { type: "positional", description: MIRROR_SERVERS.join(" | "), required: true },
    images: { type: "string", description: "the directory holding the images on this mirror (a copy: rsync -a STATE/images/ DIR/); must exist" },
    state: { type: "string", description: "or: server state directory, to serve STATE/images on the server itself" },
    root: { type: "string", description: "URL path the images appear under (default /images/, like airroot serve); the server lists mirrors as base URLs + /images/, so keep it ending in images/" },
    listen: { type: "string", description: "PORT, IPV4:PORT or [IPV6]:PORT; repeatable or comma-separated (default 443, all addresses)" },
    cert: { type: "string", description: `TLS certificate of this mirror from \`airroot serve mirror-cert\` (PREFIX.crt; default ${DEFAULT_MIRROR_CERT})` },
    key: { type: "string", description: `its private key (PREFIX.key; default ${DEFAULT_MIRROR_KEY})` },
    "server-name": { type: "string", description: "server name, nginx and Apache only (default: any)" },
  },
  run({ args, rawArgs }) {
    const server = args.server as MirrorServer;
    if (!MIRROR_SERVERS.includes(server)) throw new Error(`mirror-config: unknown server "${args.server}": use ${MIRROR_SERVERS.join(", ")}`);
    if (args.images !== undefined && args.state !== undefined) throw new Error("mirror-config: give --images DIR (a mirror's copy) or --state DIR (serve STATE/images), not both");
    if (args.images === undefined && args.state === undefined) throw new Error("mirror-config: pass --images DIR (the mirror's copy of STATE/images) or --state DIR (serves DIR/images)");
    const dir = args.images !== undefined ? resolve(args.images) : imagesDir(resolve(args.state!));
    const warnings = checkImagesDir(dir);
    const text = mirrorConfig(server, {
      stateDir: args.state === undefined ? undefined : resolve(args.state),
      imagesDir: args.images === undefined ? undefined : resolve(args.images), urlPath: args.root, listen: repeated(rawArgs, "listen"),
      cert: args.cert, key: args.key, serverName: args["server-name"],
    });
    for (const w of warnings) console.error(`warning: ${w}`);
    if (args.cert === undefined || args.key === undefined) {
      const cert = args.cert ?? DEFAULT_MIRROR_CERT, key = args.key ?? DEFAULT_MIRROR_KEY;
      console.error(`note: the config reads the certificate from ${cert} and the key from ${key}` +
        `${args.cert === undefined && args.key === undefined ? " (the defaults; --cert/--key to change)" : " (--cert/--key to change)"}; ` +
        `make them with \`airroot serve mirror-cert --state STATE --address ADDR --out ${cert.replace(/\.crt$/, "")}\` on the server`);
    }
    process.stdout.write(text);
  },
});
