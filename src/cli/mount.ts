// `airroot mount`: thin command over src/mount (config → daemon).
import { defineCommand } from "citty";
import { parseMountConfig, MOUNT_DEFAULTS } from "../mount/config";
import { startHeldMount, READY_LINE } from "../mount/background";
import { writeSync } from "node:fs";
import { resolve } from "node:path";
import { holderSocketPath, statusLogPath } from "../mount/status";
import { HELD_ENV, runHolder, type HeldContext } from "../mount/holder";
import { requestTakeover } from "../mount/takeover";
import { selfCommand } from "../util/self";
import { createLogger } from "../util/log";
import { repeated } from "./args";

export const mountCommand = defineCommand({
  meta: {
    name: "mount",
    description: "Mount URL... at MOUNTPOINT/<file name>: a read-only image fetched on demand with HTTPS ranges from several servers. " +
      "A second process, the holder, keeps the FUSE connection: if the daemon dies it starts a new one within a second and " +
      "readers only pause. `airroot mount --takeover MOUNTPOINT` hands a running mount to this binary (live upgrade)",
  },
  args: {
    ca: { type: "string", description: "PEM file of the CA(s) that must have signed the servers' certificates (default: system store)" },
    order: { type: "string", description: "source preference: listed | latency | spread (rendezvous hash on --node-id)", default: MOUNT_DEFAULTS.order },
    "node-id": { type: "string", description: "node identity for --order spread (default: hostname)" },
    weight: { type: "string", description: "URL=W (repeatable): for --order spread, the share of the server at URL (an image URL or its base URL, e.g. https://mirror1=10): a weight-10 server is first for 10x as many nodes as a weight-1 one; unnamed servers weigh 1; 0 = last resort (used only when every weighted server is down)" },
    "cache-mb": { type: "string", description: "RAM for image blocks beside the kernel page cache, cached or being fetched (plus one 1 MiB request), MiB", default: String(MOUNT_DEFAULTS.cacheMb) },
    "io-timeout": { type: "string", description: "give readers EIO after this long with no server (e.g. 5m); default: wait forever, right for a root fs" },
    "stall-timeout": { type: "string", description: "a request with no progress for this long fails over to the next server", default: `${MOUNT_DEFAULTS.stallTimeoutMs / 1000}s` },
    manifest: { type: "string", description: "signed image manifest (https URL or local file): every chunk is verified before the kernel sees it, every server must offer its size, and servers sending neither ETag nor Last-Modified (lighttpd) become usable" },
    "expect-digest": { type: "string", description: "SHA-256 of the image you were told to boot: a manifest for any other (older) image is refused" },
    "image-key": { type: "string", description: "image-signing public key (PEM) that must have signed --manifest" },
    foreground: { type: "boolean", description: "stay attached; stop with Ctrl-C / SIGTERM (unmounts). No holder: a crash of this process ends the mount" },
    takeover: { type: "boolean", description: "airroot mount --takeover MOUNTPOINT: hand the running mount's connection to a daemon of this binary (live upgrade): the old daemon stops taking requests, finishes those in flight and exits, the new one serves on; no read fails" },
    argv0: { type: "string", description: "process name of the daemon, e.g. @airroot-root (systemd spares '@' processes at switch-root and shutdown); the holder is NAME-holder (@airroot-root-holder)" },
    verbose: { type: "boolean", description: "log every request retry, not only state changes" },
    fill: { type: "string", description: "PATH or disk:DEV: once mounted, copy every chunk not yet fetched, verified against --manifest, into this local file (e.g. on tmpfs) or block device, at low priority (demand reads first, at most 2 requests, healthy servers in turn, paused while servers fail); when complete, the loop device reading this mount is switched to the copy (LOOP_CHANGE_FD) and the node needs no server" },
    "fill-rate": { type: "string", description: "cap the background fill at this many MB/s (default: no cap)" },
    "untether-loop": { type: "string", description: "with --fill: auto (every loop device backed by this mount's file, default), off (keep the copy, switch nothing), or /dev/loopN" },
    "switch-loop": { type: "string", description: "(internal) switch this loop device to --fill PATH and exit" },
    "notify-ready": { type: "boolean", description: "(internal) print a ready line on stdout once mounted" },
    holder: { type: "boolean", description: "(internal) run as the holder of the FUSE connection" },
    held: { type: "boolean", description: "(internal) run as a daemon started by the holder (fd 3 is /dev/fuse)" },
  },
  async run({ args, rawArgs }) {
    if (args.takeover) {
      const pos = args._ as string[];
      if (pos.length !== 1) throw new Error("mount --takeover: name exactly one MOUNTPOINT (the running mount's; its settings are kept)");
      const r = await requestTakeover(resolve(pos[0]!), selfCommand(), (l) => console.error(l));
      console.log(`${resolve(pos[0]!)}: daemon pid ${r.pid} (${selfCommand()[0]}) took over from pid ${r.oldPid ?? "-"}; reads paused ${r.pauseMs} ms`);
      process.exit(0);
    }
    if (args["switch-loop"]) {
      // Run by the daemon in a child process once its fill is complete (see src/mount/untether.ts).
      const { runSwitchLoop } = await import("../mount/untether");
      await runSwitchLoop(args["switch-loop"], resolve(String(args.fill ?? "").replace(/^disk:/, "")));
      process.exit(0);
    }
    const cfg = parseMountConfig({
      positional: args._ as string[], ca: args.ca, order: args.order, nodeId: args["node-id"], weights: repeated(rawArgs, "weight"), cacheMb: args["cache-mb"],
      ioTimeout: args["io-timeout"], stallTimeout: args["stall-timeout"], foreground: args.foreground,
      argv0: args.argv0, manifest: args.manifest, imageKey: args["image-key"], expectDigest: args["expect-digest"], verbose: args.verbose,
      fill: args.fill, fillRate: args["fill-rate"], untetherLoop: args["untether-loop"],
      mounted: !!args.held,
    });
    if (args.holder) {
      const log = createLogger({ prefix: "airroot holder", kmsg: true });
      const code = await runHolder({
        exe: selfCommand(), mountArgs: rawArgs.filter((a) => a !== "--holder" && a !== "--foreground" && a !== "--notify-ready"),
        daemonArgv0: cfg.argv0, control: holderSocketPath(cfg.mountpoint), log: (l) => log.info(l),
        onReady: (pid) => { try { writeSync(1, `${READY_LINE} ${pid}\n`); } catch { /* the caller went away */ } },
      });
      process.exit(code);
    }
    if (cfg.foreground) {
      let held: HeldContext | undefined;
      if (args.held) {
        try { held = JSON.parse(process.env[HELD_ENV] ?? "") as HeldContext; } catch {
          throw new Error(`mount --held: ${HELD_ENV} is missing or not JSON (this option is for the holder only)`);
        }
        delete process.env[HELD_ENV];
      }
      // Imported here, not at the top: the holder runs this command too and must not load the engine it never uses.
      const { runMountDaemon } = await import("../mount/daemon");
      await runMountDaemon(cfg, args["notify-ready"] ? () => writeSync(1, `${READY_LINE}\n`) : undefined, held);
      process.exit(0);
    }
    const { daemonPid, holderPid } = await startHeldMount(rawArgs.filter((a) => a !== "--foreground"), cfg.mountpoint, cfg.argv0);
    console.log(`mounted at ${cfg.mountpoint} (daemon pid ${daemonPid}, holder pid ${holderPid}, log ${statusLogPath(cfg.mountpoint)}); \`airroot status ${cfg.mountpoint}\` shows its sources`);
    process.exit(0);
  },
});
