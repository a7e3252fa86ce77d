// `airroot mount`: thin command over src/mount (config → daemon).
import { defineCommand } from "citty";
import { parseMountConfig, MOUNT_DEFAULTS } from "../mount/config";
import { runMountDaemon } from "../mount/daemon";
import { startDetachedDaemon, READY_LINE } from "../mount/background";
import { writeSync } from "node:fs";
import { statusLogPath } from "../mount/status";

export const mountCommand = defineCommand({
  meta: {
    name: "mount",
    description: "Mount URL... at MOUNTPOINT/<file name>: a read-only image fetched on demand with HTTPS ranges from several servers",
  },
  args: {
    ca: { type: "string", description: "PEM file of the CA(s) that must have signed the servers' certificates (default: system store)" },
    order: { type: "string", description: "source preference: listed | latency | spread (rendezvous hash on --node-id)", default: MOUNT_DEFAULTS.order },
    "node-id": { type: "string", description: "node identity for --order spread (default: hostname)" },
    "cache-mb": { type: "string", description: "RAM for image blocks beside the kernel page cache, cached or being fetched (plus one 1 MiB request), MiB", default: String(MOUNT_DEFAULTS.cacheMb) },
    "io-timeout": { type: "string", description: "give readers EIO after this long with no server (e.g. 5m); default: wait forever, right for a root fs" },
    "stall-timeout": { type: "string", description: "a request with no progress for this long fails over to the next server", default: `${MOUNT_DEFAULTS.stallTimeoutMs / 1000}s` },
    manifest: { type: "string", description: "signed image manifest (https URL or local file): every chunk is verified before the kernel sees it, every server must offer its size, and servers sending neither ETag nor Last-Modified (lighttpd) become usable" },
    "expect-digest": { type: "string", description: "SHA-256 of the image you were told to boot: a manifest for any other (older) image is refused" },
    "image-key": { type: "string", description: "image-signing public key (PEM) that must have signed --manifest" },
    foreground: { type: "boolean", description: "stay attached; stop with Ctrl-C / SIGTERM (unmounts)" },
    argv0: { type: "string", description: "process name of the daemon, e.g. @airroot-root (systemd spares '@' processes at switch-root and shutdown)" },
    verbose: { type: "boolean", description: "log every request retry, not only state changes" },
    "notify-ready": { type: "boolean", description: "(internal) print a ready line on stdout once mounted" },
  },
  async run({ args, rawArgs }) {
    const cfg = parseMountConfig({
      positional: args._ as string[], ca: args.ca, order: args.order, nodeId: args["node-id"], cacheMb: args["cache-mb"],
      ioTimeout: args["io-timeout"], stallTimeout: args["stall-timeout"], foreground: args.foreground,
      argv0: args.argv0, manifest: args.manifest, imageKey: args["image-key"], expectDigest: args["expect-digest"], verbose: args.verbose,
    });
    if (cfg.foreground) {
      await runMountDaemon(cfg, args["notify-ready"] ? () => writeSync(1, `${READY_LINE}\n`) : undefined);
      process.exit(0);
    }
    const pid = await startDetachedDaemon(rawArgs.filter((a) => a !== "--foreground"), cfg.mountpoint, cfg.argv0);
    console.log(`mounted at ${cfg.mountpoint} (daemon pid ${pid}, log ${statusLogPath(cfg.mountpoint)}); \`airroot status ${cfg.mountpoint}\` shows its sources`);
    process.exit(0);
  },
});
