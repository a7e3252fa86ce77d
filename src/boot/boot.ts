// `airroot init`: the boot as an ordered list of steps, from /init (PID 1) to execve of the real init.
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { bootOptions, moduleParams, parseCmdline, rescueMode, type BootOptions, type Cmdline } from "./cmdline";
import { chooseConsole, configureConsole, describeChoice, probePorts, readSpcr, type ConsoleChoice } from "./console";
import { coldplug } from "./drivers";
import { configureNetwork, type NetResult } from "./net";
import { mountPseudoFilesystems } from "./pseudofs";
import { rescue } from "./rescue";
import { mountOverlayRoot, type RootfsResult } from "./rootfs";
import { copyImage, mountImageOnDemand, ROOT_DAEMON_ARGV0 } from "./image";
import { personalize } from "./personalize";
import { FinalError, runSequence, StepConsole, stdoutConsole, uptimeClock, type SequenceOutcome, type Step } from "./sequence";
import { DEFAULT_PATHS, generateHostKeys, sshdConfig, startSshdSupervisor, testSshdConfig, waitForListener, writeAuthorizedKeys } from "./sshd";
import { switchRoot } from "./switchroot";
import { powerOff } from "../sys/power";

export interface BootContext {
  cmdline: Cmdline;
  options: BootOptions;
  sc: StepConsole;
  console?: ConsoleChoice;
  net?: NetResult;
  rootfs?: RootfsResult;
  /** The root image once obtained (mounted on demand or copied). */
  image?: { path: string; how: string };
  sshdPid?: number;
  rootDaemonPid?: number;
}

/** Site configuration copied into the initramfs by initramfs/build.ts --site. */
export const SITE_DIR = "/etc/airroot/site";

/** Fresh host keys, root's authorized keys and (unless airroot.debugsshd=off) the supervised debug sshd on 2222. */
async function setUpSsh(ctx: BootContext): Promise<number> {
  const keys = await generateHostKeys(DEFAULT_PATHS.etcDir);
  const n = writeAuthorizedKeys(DEFAULT_PATHS.authorizedKeys, [`${SITE_DIR}/authorized_keys`, "/root/.ssh/authorized_keys"]);
  if (ctx.options.debugSshd) {
    writeFileSync(DEFAULT_PATHS.config, sshdConfig({ hostKeys: keys, authorizedKeys: DEFAULT_PATHS.authorizedKeys, pidFile: DEFAULT_PATHS.pidFile }));
    testSshdConfig(DEFAULT_PATHS.config);
    // Loopback up even when the network step is skipped, so the listener check below (and local ssh) works.
    Bun.spawnSync(["busybox", "ip", "link", "set", "lo", "up"]);
    ctx.sshdPid = startSshdSupervisor(DEFAULT_PATHS.config);
    if (!(await waitForListener("127.0.0.1", 2222, 10_000)))
      throw new Error("the debug sshd is not listening on port 2222 after 10 s; see /run/airroot/sshd.log");
  }
  return n;
}

export const STEPS: Step<BootContext>[] = [
  {
    name: "pseudofs", title: "Mounting /proc /sys /dev /run",
    run: async () => {
      mountPseudoFilesystems("/");
      // The kernel's tmpfs rootfs has a world-writable root (1777); sshd's StrictModes then refuses every
      // authorized_keys file. An installed system's / is 0755.
      chmodSync("/", 0o755);
    },
  },
  {
    name: "console", title: "Detecting the console",
    run: async (ctx) => {
      const d = chooseConsole(ctx.cmdline, readSpcr(), probePorts());
      if (ctx.options.debug) for (const n of d.notes) ctx.sc.log(n);
      if (!d.choice) return { line: "No serial console found; output stays on the kernel's console" };
      configureConsole(d.choice);
      ctx.console = d.choice;
      return { line: describeChoice(d.choice) };
    },
  },
  {
    name: "banner", title: "Initializing airroot diskless environment",
    run: async () => ({ line: "Initializing airroot diskless environment" }),
  },
  {
    name: "drivers", title: "Loading drivers",
    run: async (ctx) => {
      const r = await coldplug({
        extra: ctx.options.modules, blacklist: ctx.options.blacklist,
        params: (m) => moduleParams(ctx.cmdline, m), log: ctx.options.debug ? (l) => ctx.sc.log(l) : undefined,
      });
      if (ctx.options.debug) ctx.sc.log(`loaded: ${r.loaded.join(" ") || "(none)"} from ${r.modaliases} modaliases`);
      // airroot cannot mount its root without these; a missing NIC driver shows up in the network step instead.
      const needed = r.missing.filter((m) => ["fuse", "overlay", "squashfs", "loop"].includes(m));
      if (needed.length) throw new Error(`modules ${needed.join(", ")} are neither built in nor in the initramfs`);
      const failedNeeded = r.failed.filter((f) => ["fuse", "overlay", "squashfs", "loop"].includes(f.name));
      if (failedNeeded.length) throw new Error(failedNeeded.map((f) => f.error).join("; "));
      return "done";
    },
  },
  {
    name: "net", title: "Scanning for network configuration",
    retries: 2, // a switch port still in spanning-tree listening state, a DHCP server restarting
    run: async (ctx) => {
      ctx.net = await configureNetwork({ ip: ctx.options.ip, dhcpTimeoutSec: ctx.options.dhcpTimeoutSec,
        log: (l) => ctx.sc.log(l) });
      return ctx.net.summary;
    },
  },
  {
    name: "sshd", title: "Initializing ssh",
    run: async (ctx) => {
      const n = await setUpSsh(ctx);
      return `ssh-keygen: generating new host keys: RSA ECDSA ED25519` +
        (ctx.options.debugSshd ? `; debug sshd on port 2222 (${n} authorized key${n === 1 ? "" : "s"})` : "");
    },
  },
  {
    name: "root", title: "Mounting the root filesystem",
    retries: 2, // servers rebooting
    run: async (ctx) => {
      const o = ctx.options;
      let image = o.rootImage ?? ctx.image?.path;
      let how = ctx.image?.how ?? "";
      if (!image && o.imageUrls.length) {
        const src = { urls: o.imageUrls, caFile: `${SITE_DIR}/ca.pem`, manifestUrl: o.manifestUrl,
          imageKeyFile: o.manifestUrl ? `${SITE_DIR}/image-key.pem` : undefined };
        if (o.imageMethod === "copy") {
          const c = await copyImage(src, { progress: (l) => ctx.sc.log(l) });
          image = c.path;
          how = ` (copied ${(c.bytes / 1048576).toFixed(1)} MiB from ${c.url})`;
        } else {
          const m = await mountImageOnDemand(src, "/mnt/image", (l) => ctx.sc.log(l));
          ctx.rootDaemonPid = m.pid;
          image = m.path;
          how = ` (on demand from ${o.imageUrls.length} server${o.imageUrls.length === 1 ? "" : "s"}, ${ROOT_DAEMON_ARGV0} pid ${m.pid})`;
        }
      }
      // Kept so a retry after a failed overlay mount does not start a second mount engine or download.
      if (image && !o.rootImage) ctx.image = { path: image, how };
      if (!image) {
        // Not built yet: image URLs from the server's node config (issue 3) and multicast discovery.
        throw new FinalError(o.servers.length
          ? "getting the image from airroot.server is not implemented in this build yet; use airroot.imageurl or airroot.rootimage"
          : "no root image: give airroot.imageurl=URL[,URL...] or airroot.rootimage=PATH (server discovery is not implemented in this build yet)");
      }
      ctx.rootfs = mountOverlayRoot({ image, overlaySize: o.overlaySize });
      return `overlay on ${ctx.rootfs.sysroot}: ${image} via ${ctx.rootfs.loopDevice}, tmpfs ${o.overlaySize}${how}`;
    },
  },
  {
    name: "personalize", title: "Personalizing the new root",
    run: async (ctx) => {
      if (!ctx.rootfs) return "skipped (no new root)";
      const lease = ctx.net?.configured.find((c) => c.lease?.hostname);
      let authorizedKeys: string | undefined;
      try { authorizedKeys = readFileSync(DEFAULT_PATHS.authorizedKeys, "utf8"); } catch {}
      const r = personalize({ root: ctx.rootfs.sysroot, interfaces: ctx.net?.configured ?? [], console: ctx.console,
        hostname: lease?.lease?.hostname, authorizedKeys });
      if (ctx.options.debug) for (const w of r.written) ctx.sc.log(`wrote /${w}`);
      return `done (${r.written.length} file${r.written.length === 1 ? "" : "s"})`;
    },
  },
];

export interface InitOptions {
  /** The kernel command line; default /proc/cmdline (read after /proc is mounted). */
  cmdline?: string;
}

function readCmdline(): string {
  try { return readFileSync("/proc/cmdline", "utf8"); } catch {}
  // /proc is not mounted yet when we start as PID 1.
  mountPseudoFilesystems("/");
  return readFileSync("/proc/cmdline", "utf8");
}

/** Runs the boot. As PID 1 this never returns: it execs the real init, powers off, or ends in the rescue shell. */
export async function runInit(o: InitOptions = {}): Promise<void> {
  process.env.PATH = "/usr/sbin:/usr/bin:/sbin:/bin";
  const sc = new StepConsole(stdoutConsole, uptimeClock());
  if (process.pid === 1) {
    // A bug must end in the rescue shell, not in "Attempted to kill init" (PID 1 exiting panics the kernel).
    let rescuing = false;
    let then: "shell" | "poweroff" = "shell";
    try { then = rescueMode(parseCmdline(o.cmdline ?? readFileSync("/proc/cmdline", "utf8"))); } catch {}
    const onFatal = (e: unknown) => {
      if (rescuing) { console.error("airroot: unexpected error in rescue:", e); return; }
      rescuing = true;
      void rescue({ failure: { step: "internal", title: "airroot init", error: e instanceof Error ? e : new Error(String(e)) }, sshd: false, then });
    };
    process.on("uncaughtException", onFatal);
    process.on("unhandledRejection", onFatal);
  }
  let cmdline: Cmdline;
  let options: BootOptions;
  try {
    cmdline = parseCmdline(o.cmdline ?? readCmdline());
    const r = bootOptions(cmdline);
    options = r.options;
    for (const u of r.unknown) sc.log(`warning: unknown option ${u} ignored`);
  } catch (e) {
    let then: "shell" | "poweroff" = "shell";
    try { then = rescueMode(parseCmdline(o.cmdline ?? readFileSync("/proc/cmdline", "utf8"))); } catch {}
    await rescue({ failure: { step: "cmdline", title: "Reading the kernel command line", error: e as Error }, sshd: false, then });
    return;
  }
  const ctx: BootContext = { cmdline, options, sc };
  const own = () => [ctx.sshdPid, ctx.rootDaemonPid].filter((p): p is number => p !== undefined);
  const ttyOf = () => (ctx.console && ctx.console.source !== "cmdline" ? `/dev/${ctx.console.tty}` : undefined);
  const outcome: SequenceOutcome = await runSequence(STEPS, ctx, sc, { skip: options.skip });
  if (!outcome.ok) {
    // The issue promises the 2222 sshd in rescue too: start it if the boot failed before the ssh step.
    if (options.rescue === "shell" && options.debugSshd && ctx.sshdPid === undefined && outcome.step !== "sshd") {
      try { await setUpSsh(ctx); } catch (e) { sc.log(`debug sshd not started: ${(e as Error).message}`); }
    }
    await rescue({ failure: outcome, tty: ttyOf(), sshd: ctx.sshdPid !== undefined, then: options.rescue, ownChildren: own() });
    return;
  }
  if (options.shell) {
    await rescue({ tty: ttyOf(), sshd: ctx.sshdPid !== undefined, ownChildren: own() });
    return;
  }
  if (options.poweroff) {
    sc.log(`airroot.poweroff: boot steps done in ${(outcome.elapsedMs / 1000).toFixed(1)} s, powering off`);
    powerOff();
  }
  try {
    sc.log(`Switching root to /sysroot and starting ${options.init}`);
    switchRoot({ newRoot: ctx.rootfs?.sysroot ?? "/sysroot", init: options.init, args: cmdline.initArgs,
      // The debug sshd checks its privilege separation directory on every connection.
      afterRemount: () => { mkdirSync(DEFAULT_PATHS.privsepDir, { recursive: true, mode: 0o755 }); mkdirSync("/run/airroot", { recursive: true }); } });
  } catch (e) {
    await rescue({ failure: { step: "switchroot", title: "Switching to the new root", error: e as Error }, tty: ttyOf(),
      sshd: ctx.sshdPid !== undefined, then: options.rescue, ownChildren: own() });
  }
}
