// `airroot init`: the boot as an ordered list of steps, from /init (PID 1) to execve of the real init.
import { chmodSync, existsSync, mkdirSync, readFileSync, statfsSync, statSync, writeFileSync } from "node:fs";
import { blockDeviceBytes } from "../sys/blockdev";
import { smbiosUuid } from "../client/identity";
import { bootOptions, moduleParams, parseCmdline, rescueMode, type BootOptions, type Cmdline } from "./cmdline";
import { chooseConsole, configureConsole, describeChoice, probePorts, readSpcr, type ConsoleChoice } from "./console";
import { coldplug } from "./drivers";
import { configureNetwork, type NetResult } from "./net";
import { mountPseudoFilesystems } from "./pseudofs";
import { rescue } from "./rescue";
import { mountOverlayRoot, type RootCrypt, type RootfsResult } from "./rootfs";
import { loadCryptModules, rootCryptFor } from "./cryptroot";
import { copyImage, mountImageOnDemand, ROOT_DAEMON_ARGV0, ROOT_STATE_DIR } from "./image";
import { chooseRootSource, fetchVerifiedManifest, readSiteImageKey, verifyImageFile } from "./rootsource";
import { installSshTrust, addKnownHostsCa, machineIdFor, writeHostCertificates } from "./sshtrust";
import { configuredServers, lockBeforeRescue, reportFailure, reportStage, runTrust, type Trusted } from "./trust";
import { applyConfigNetwork } from "./net";
import { AIRROOT_IN_NEW_ROOT, bindAirroot, personalize } from "./personalize";
import { bootedUnit, DEFAULT_RUNNING_WAIT_SEC, reporterInputFor, startReporter } from "./reporter";
import { isCompiledBinary } from "../util/self";
import { bootZone, zoner } from "./linklocal";
import { FinalError, WaitError, runSequence, StepConsole, stdoutConsole, uptimeClock, type SequenceOutcome, type Step } from "./sequence";
import { DEFAULT_PATHS, generateHostKeys, sshdConfig, startSshdSupervisor, testSshdConfig, waitForListener, writeAuthorizedKeys } from "./sshd";
import { switchRoot } from "./switchroot";
import { powerOff } from "../sys/power";
import { mount, MS_BIND } from "../sys/libc";

export interface BootContext {
  cmdline: Cmdline;
  options: BootOptions;
  sc: StepConsole;
  console?: ConsoleChoice;
  net?: NetResult;
  rootfs?: RootfsResult;
  /** The root image once obtained (mounted on demand or copied); digest when checked against a signed manifest. */
  image?: { path: string; how: string; digest?: string; crypt?: RootCrypt };
  sshdPid?: number;
  rootDaemonPid?: number;
  /** The root's mount point when its daemon fills a local copy (airroot.untether): the reporter waits for it. */
  untetherMount?: string;
  /** Private host key paths made by the ssh step. */
  hostKeys?: string[];
  /** Credential, node config and host certificates from the trust step. */
  trusted?: Trusted;
  trustLine?: string;
  /** The boot interface's IPv6 zone (its index) for zone-less link-local server URLs; undefined without a network step. */
  zone?: string;
}

/** Site configuration copied into the initramfs by initramfs/build.ts --site. */
export const SITE_DIR = "/etc/airroot/site";
const SSHD_LISTEN_WAIT_MS = 60_000;

/** Fresh host keys, root's authorized keys and (unless airroot.debugsshd=off) the supervised debug sshd on 2222. */
async function setUpSsh(ctx: BootContext): Promise<number> {
  const keys = await generateHostKeys(DEFAULT_PATHS.etcDir);
  ctx.hostKeys = keys;
  const n = writeAuthorizedKeys(DEFAULT_PATHS.authorizedKeys, [`${SITE_DIR}/authorized_keys`, "/root/.ssh/authorized_keys"]);
  if (ctx.options.debugSshd) {
    writeFileSync(DEFAULT_PATHS.config, sshdConfig({ hostKeys: keys, authorizedKeys: DEFAULT_PATHS.authorizedKeys, pidFile: DEFAULT_PATHS.pidFile }));
    testSshdConfig(DEFAULT_PATHS.config);
    // Loopback up even when the network step is skipped, so the listener check below (and local ssh) works.
    Bun.spawnSync(["busybox", "ip", "link", "set", "lo", "up"]);
    ctx.sshdPid = startSshdSupervisor(DEFAULT_PATHS.config);
    // Generous: the supervisor is this binary started again, which under emulation (QEMU TCG) on a loaded host
    // took more than 10 s to get sshd listening (2026-12-03).
    if (!(await waitForListener("127.0.0.1", 2222, SSHD_LISTEN_WAIT_MS)))
      throw new Error(`the debug sshd is not listening on port 2222 after ${SSHD_LISTEN_WAIT_MS / 1000} s; see /run/airroot/sshd.log`);
  }
  return n;
}

const siteCa = () => readFileSync(`${SITE_DIR}/ca.pem`, "utf8");

/** MACs of the interfaces the network step configured (the boot NICs). */
function macsOf(ctx: BootContext): string[] {
  const out: string[] = [];
  for (const c of ctx.net?.configured ?? []) {
    try {
      const m = readFileSync(`/sys/class/net/${c.iface}/address`, "utf8").trim().toLowerCase();
      if (/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(m) && m !== "00:00:00:00:00:00") out.push(m);
    } catch {}
  }
  return out;
}

/**
 * What the config and certificates change in the initramfs right away: host certificates for the debug sshd (reloaded),
 * the SSH CA for ssh from here, root's authorized keys, the host name, and static network settings from the server.
 */
async function applyTrust(ctx: BootContext, t: Trusted): Promise<void> {
  const cfg = t.config;
  if (t.hostCertificates && ctx.hostKeys) {
    writeHostCertificates(ctx.hostKeys, t.hostCertificates);
    if (ctx.options.debugSshd && ctx.sshdPid !== undefined) {
      writeFileSync(DEFAULT_PATHS.config, sshdConfig({ hostKeys: ctx.hostKeys, authorizedKeys: DEFAULT_PATHS.authorizedKeys, pidFile: DEFAULT_PATHS.pidFile }));
      testSshdConfig(DEFAULT_PATHS.config);
      reloadSshd(DEFAULT_PATHS.pidFile);
    }
  }
  if (cfg.sshCaPublicKey) addKnownHostsCa(`${DEFAULT_PATHS.etcDir}/ssh_known_hosts`, cfg.sshCaPublicKey);
  if (cfg.rootAuthorizedKeys.length) {
    const extra = "/run/airroot/config_authorized_keys";
    mkdirSync("/run/airroot", { recursive: true });
    writeFileSync(extra, cfg.rootAuthorizedKeys.join("\n") + "\n", { mode: 0o600 });
    writeAuthorizedKeys(DEFAULT_PATHS.authorizedKeys, [`${SITE_DIR}/authorized_keys`, "/root/.ssh/authorized_keys", extra]);
  }
  Bun.spawnSync(["busybox", "hostname", cfg.name], { stdout: "ignore", stderr: "ignore" });
  if (ctx.net && ctx.options.ip === "dhcp") {
    const l = applyConfigNetwork(ctx.net, cfg.network);
    if (l) ctx.sc.log(l);
  }
}

/** sshd re-executes itself on SIGHUP and so rereads its config (now with HostCertificate lines). */
function reloadSshd(pidFile: string): void {
  // The pid file appears once sshd is up; the step before waited for its listener.
  try {
    const pid = Number(readFileSync(pidFile, "utf8").trim());
    if (Number.isInteger(pid) && pid > 1) process.kill(pid, "SIGHUP");
  } catch {}
}

const secondsOrForever = (s: number | undefined) => (s === undefined ? undefined : s * 1000);

/**
 * The root image from the servers (config) or airroot.imageurl: the signed manifest checked, then the mount engine
 * started on it (or the image copied into RAM). Servers that do not answer are a WaitError, so the root step waits for
 * them; what the attempt printed is kept until it succeeds (one console line per state while waiting, not per try).
 */
async function obtainRootImage(ctx: BootContext): Promise<BootContext["image"]> {
  const o = ctx.options;
  let rs: ReturnType<typeof chooseRootSource>;
  try {
    rs = chooseRootSource({ options: o, config: ctx.trusted?.config, siteImageKeyPem: readSiteImageKey(`${SITE_DIR}/image-key.pem`) });
  } catch (e) { throw new FinalError((e as Error).message); } // the config will not change while we wait
  if (!rs) return undefined;
  const caFile = `${SITE_DIR}/ca.pem`;
  if (!existsSync(caFile)) throw new FinalError(`site CA ${caFile} is missing: build the initramfs with SITE=DIR from \`airroot serve site-config\``);
  const lines: string[] = [];
  const note = (l: string) => { if (o.debug) ctx.sc.log(l); else lines.push(l); };
  const flush = () => { if (!o.debug) for (const l of lines.splice(0)) ctx.sc.log(l); };
  // The manifest is checked here first (signature, and the digest the server told us to boot), so an old, validly
  // signed image cannot be substituted; the mount engine then verifies every chunk against it.
  let manifest: Awaited<ReturnType<typeof fetchVerifiedManifest>> | undefined;
  if (rs.manifestUrls.length && rs.imageKeyPem) {
    try {
      manifest = await fetchVerifiedManifest(rs.manifestUrls, rs.imageKeyPem, readFileSync(caFile, "utf8"), rs.expectDigest, note);
    } catch (e) { throw new WaitError("image server", (e as Error).message); }
  } else note("warning: no signed manifest for the root image (airroot.imageurl without airroot.manifest): its bytes are not verified");
  // The mount engine gets the manifest just verified as a file, not a URL to fetch again: a server that dies (or
  // answers differently) in between can then neither stop the mount nor swap the image.
  // Not under /run: /run moves into the new root at switch_root, and the holder, which stays in the initramfs root,
  // starts every later daemon (after a crash or for a takeover) with these same paths.
  const keyFile = `${ROOT_STATE_DIR}/image-key.pem`, manifestFile = `${ROOT_STATE_DIR}/root.manifest`;
  if (manifest) {
    mkdirSync(ROOT_STATE_DIR, { recursive: true });
    writeFileSync(keyFile, rs.imageKeyPem!, { mode: 0o644 });
    writeFileSync(manifestFile, manifest.bytes, { mode: 0o644 });
  }
  const src = { urls: rs.urls, caFile, manifestUrl: manifest ? manifestFile : undefined, imageKeyFile: manifest ? keyFile : undefined,
    expectDigest: manifest ? rs.expectDigest : undefined, order: rs.order, nodeId: rs.nodeId, weights: rs.weights };
  const n = rs.urls.length;
  const digest = manifest?.manifest.digest;
  // An encrypted image's key comes only in the mutual-TLS config, and lives on only in this process until the root step.
  const crypt = rootCryptFor(manifest?.manifest, ctx.trusted?.config.image?.encryption);
  if (o.imageMethod === "copy") {
    const m = manifest?.manifest;
    let c: Awaited<ReturnType<typeof copyImage>>;
    try {
      c = await copyImage(src, { progress: (l) => { flush(); ctx.sc.log(l); }, verify: m ? (p) => verifyImageFile(p, m) : undefined, maxBytes: m?.size });
    } catch (e) {
      if (/^could not download the image from any server/.test((e as Error).message)) throw new WaitError("image server", (e as Error).message);
      throw e;
    }
    flush();
    return { path: c.path, digest, crypt,
      how: ` (copied ${(c.bytes / 1048576).toFixed(1)} MiB from ${c.url}${m ? ", verified against the signed manifest" : ""})` };
  }
  const fill = untetherTarget(o.untether, manifest?.manifest.size, (l) => ctx.sc.log(l));
  let m: Awaited<ReturnType<typeof mountImageOnDemand>>;
  try {
    m = await mountImageOnDemand({ ...src, fillPath: fill?.path, fillRateMBps: o.untether.to === "off" ? undefined : o.untether.rateMBps }, ROOT_MOUNTPOINT, note);
  } catch (e) {
    // The engine's own last words say whether no server answered (wait) or something local failed (do not).
    const away = lines.map((l) => /cannot reach any image server: (.*)$/.exec(l)?.[0]).filter(Boolean).pop();
    if (away) throw new WaitError("image server", away);
    flush();
    throw e;
  }
  flush();
  ctx.rootDaemonPid = m.pid;
  if (fill) ctx.untetherMount = ROOT_MOUNTPOINT;
  return { path: m.path, digest, crypt,
    how: ` (on demand from ${n} server${n === 1 ? "" : "s"}${manifest ? ", verified" : ""}, ${ROOT_DAEMON_ARGV0} pid ${m.pid}` +
      `${fill ? `, untethering into ${fill.what}` : ""})` };
}

/** Where the on-demand root's FUSE mount lives in the initramfs environment. */
const ROOT_MOUNTPOINT = "/mnt/image";

/**
 * airroot.untether: where the background fill writes, once checked here so the console says at once why a node
 * will stay tethered (no signed manifest to verify the copy with, not enough RAM, no such disk, a disk too small).
 * Such a node still boots, on demand.
 */
function untetherTarget(u: BootOptions["untether"], imageSize: number | undefined, log: (l: string) => void): { path: string; what: string } | undefined {
  if (u.to === "off") return undefined;
  const no = (why: string) => { log(`warning: airroot.untether=${u.to === "disk" ? `disk:${u.device}` : u.to} ignored, the node stays on its image servers: ${why}`); return undefined; };
  if (imageSize === undefined) return no("there is no signed manifest to verify the local copy against");
  const mib = (b: number) => `${(b / 1048576).toFixed(0)} MiB`;
  if (u.to === "ram") {
    const dir = `${ROOT_STATE_DIR}/untether`;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const fs = statfsSync(dir);
    const free = fs.bavail * fs.bsize;
    // Keep an eighth of the initramfs's free RAM for everything else that lives there.
    if (imageSize > free * 7 / 8) return no(`the image (${mib(imageSize)}) does not fit in the initramfs's free RAM (${mib(free)}); use disk:/dev/DEV or more RAM`);
    return { path: `${dir}/root.copy`, what: `RAM (${mib(imageSize)} of ${mib(free)} free)` };
  }
  let size: number;
  try {
    if (!statSync(u.device).isBlockDevice()) return no(`${u.device} is not a block device`);
    size = blockDeviceBytes(u.device);
  } catch (e) { return no(`${u.device}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "no such device (is its driver loaded? airroot.modules=)" : (e as Error).message}`); }
  if (size < imageSize) return no(`${u.device} has ${mib(size)}, the image needs ${mib(imageSize)}`);
  return { path: u.device, what: `${u.device} (${mib(imageSize)} of its ${mib(size)})` };
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
      // Zone-less link-local server URLs from the command line get the boot interface (the site list and the
      // server's config get it in the trust step).
      ctx.zone = bootZone(ctx.net);
      const z = zoner(ctx.zone);
      ctx.options = { ...ctx.options, servers: ctx.options.servers.map(z), imageUrls: ctx.options.imageUrls.map(z),
        manifestUrls: ctx.options.manifestUrls.map(z) };
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
    name: "trust", title: "Contacting the deployment servers",
    retries: 3, // a refusal (4xx: not armed yet, ...) and TPM hiccups: a few tries
    // Servers that do not answer (restarting mid-boot, a switch port still coming up): wait for them like the root step.
    wait: { timeoutMs: (ctx) => secondsOrForever(ctx.options.rootTimeoutSec), option: "airroot.roottimeout" },
    run: async (ctx) => {
      // A direct image (airroot.imageurl/rootimage) with no server configured anywhere is a boot without a deployment
      // server: nothing to enroll with; without either, discovery finds the servers.
      const o = ctx.options;
      if ((o.imageUrls.length || o.rootImage) && !configuredServers(o.servers, `${SITE_DIR}/servers`).length)
        return "skipped (direct image from the command line, no server configured)";
      if (!ctx.hostKeys) throw new FinalError("no host keys (the sshd step did not run): the host certificates need them");
      // A retry after the credential was locked must not ask the TPM again: only the local part is redone.
      if (!ctx.trusted) {
        const r = await runTrust({ siteDir: SITE_DIR, servers: ctx.options.servers, noTpm: ctx.options.noTpm,
          macs: macsOf(ctx), hostKeys: ctx.hostKeys, mapUrl: zoner(ctx.zone), log: (l) => ctx.sc.log(l) });
        ctx.trusted = r.trusted;
        ctx.trustLine = r.line;
      }
      await applyTrust(ctx, ctx.trusted);
      return { line: ctx.trustLine };
    },
  },
  {
    name: "root", title: "Mounting the root filesystem",
    retries: 2, // a loop or overlay mount that fails once
    // A root filesystem waits for its servers (a server restart during a boot storm must not strand nodes).
    wait: { timeoutMs: (ctx) => secondsOrForever(ctx.options.rootTimeoutSec), option: "airroot.roottimeout" },
    run: async (ctx) => {
      const o = ctx.options;
      // Kept so a retry after a failed overlay mount does not start a second mount engine or download.
      if (!ctx.image && !o.rootImage) {
        const got = await obtainRootImage(ctx);
        if (got) ctx.image = got;
      }
      const image = o.rootImage ?? ctx.image?.path;
      const how = ctx.image?.how ?? "";
      if (!image) {
        throw new FinalError(ctx.trusted
          ? `the server has no image for node ${ctx.trusted.config.name} (profile ${ctx.trusted.config.profile}): pack one with \`airroot image pack\``
          : "no root image: boot with the trust step (airroot.server or the site's servers list), or give airroot.imageurl=URL[,URL...] or airroot.rootimage=PATH");
      }
      if (ctx.image?.crypt) await loadCryptModules({ log: o.debug ? (l) => ctx.sc.log(l) : undefined });
      ctx.rootfs = mountOverlayRoot({ image, overlaySize: o.overlaySize, crypt: ctx.image?.crypt });
      const crypt = ctx.rootfs.cryptDevice ? ` and ${ctx.rootfs.cryptDevice} (dm-crypt)` : "";
      const summary = `overlay on ${ctx.rootfs.sysroot}: ${image} via ${ctx.rootfs.loopDevice}${crypt}, tmpfs ${o.overlaySize}${how}`;
      if (ctx.trusted) await reportStage(ctx.trusted, siteCa(), "root-mounted", summary, (l) => ctx.sc.log(l), ctx.image?.digest);
      return summary;
    },
  },
  {
    name: "personalize", title: "Personalizing the new root",
    run: async (ctx) => {
      if (!ctx.rootfs) return "skipped (no new root)";
      const lease = ctx.net?.configured.find((c) => c.lease?.hostname);
      let authorizedKeys: string | undefined;
      try { authorizedKeys = readFileSync(DEFAULT_PATHS.authorizedKeys, "utf8"); } catch {}
      const cfg = ctx.trusted?.config;
      const r = personalize({ root: ctx.rootfs.sysroot, interfaces: ctx.net?.configured ?? [], console: ctx.console,
        hostname: cfg?.name ?? lease?.lease?.hostname, authorizedKeys,
        machineId: machineIdFor(ctx.trusted?.uuid ?? smbiosUuid()),
        // The boot reporter runs only for a trusted node (its report token is issued to the node's credential).
        unit: ctx.trusted ? ["airroot-booted.service", bootedUnit(AIRROOT_IN_NEW_ROOT)] : undefined });
      if (ctx.hostKeys) r.written.push(...installSshTrust({ root: ctx.rootfs.sysroot, hostKeys: ctx.hostKeys, sshCaPublicKey: cfg?.sshCaPublicKey }));
      if (ctx.options.debug) for (const w of r.written) ctx.sc.log(`wrote /${w}`);
      // `airroot status` in the booted system: the running binary, bind-mounted (not copied into the RAM overlay).
      let bound = "";
      if (isCompiledBinary()) {
        try { bound = `, airroot at ${bindAirroot(ctx.rootfs.sysroot, process.execPath)}`; }
        catch (e) { ctx.sc.log(`warning: airroot not made available in the booted system: ${(e as Error).message}`); }
      }
      return `done (${r.written.length} file${r.written.length === 1 ? "" : "s"}${bound})`;
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
  // A shell must not be able to unseal the node's credential: lock it unless the trust step already did.
  const lockForShell = async () => {
    if (ctx.trusted?.locked || options.skip.includes("trust")) return;
    const l = await lockBeforeRescue();
    if (l) sc.log(l);
  };
  if (!outcome.ok) {
    // `node list` must tell a failed boot from a stuck one: say so while the credential is still at hand.
    if (ctx.trusted) await reportFailure(ctx.trusted, siteCa(), outcome.step, outcome.error, (l) => sc.log(l), ctx.image?.digest);
    if (options.rescue === "shell") await lockForShell();
    // The issue promises the 2222 sshd in rescue too: start it if the boot failed before the ssh step.
    if (options.rescue === "shell" && options.debugSshd && ctx.sshdPid === undefined && outcome.step !== "sshd") {
      try { await setUpSsh(ctx); } catch (e) { sc.log(`debug sshd not started: ${(e as Error).message}`); }
    }
    await rescue({ failure: outcome, tty: ttyOf(), sshd: ctx.sshdPid !== undefined, then: options.rescue, ownChildren: own() });
    return;
  }
  if (options.shell) {
    await lockForShell();
    await rescue({ tty: ttyOf(), sshd: ctx.sshdPid !== undefined, ownChildren: own() });
    return;
  }
  if (options.poweroff) {
    sc.log(`airroot.poweroff: boot steps done in ${(outcome.elapsedMs / 1000).toFixed(1)} s, powering off`);
    powerOff();
  }
  let reporterPid: number | undefined;
  try {
    if (ctx.trusted) {
      await reportStage(ctx.trusted, siteCa(), "switching-root", `starting ${options.init}`, (l) => sc.log(l), ctx.image?.digest);
      // PID 1 is about to become the new init: the reporter says "switched-root", then "running" once systemd is up.
      // It outlives this process beside the booted OS, so it gets a one-boot report token, never the credential.
      try {
        reporterPid = await startReporter(await reporterInputFor(ctx.trusted, siteCa(), DEFAULT_RUNNING_WAIT_SEC, 5000, ctx.untetherMount));
      } catch (e) { sc.log(`warning: no boot reporter, the stage stays "switching-root": ${(e as Error).message}`); }
    }
    sc.log(`Switching root to /sysroot and starting ${options.init}`);
    switchRoot({ newRoot: ctx.rootfs?.sysroot ?? "/sysroot", init: options.init, args: cmdline.initArgs,
      // The debug sshd checks its privilege separation directory on every connection.
      afterRemount: () => {
        mkdirSync(DEFAULT_PATHS.privsepDir, { recursive: true, mode: 0o755 });
        keepStatusSockets("/sysroot/run/airroot/mounts", "/run/airroot/mounts");
      } });
  } catch (e) {
    if (reporterPid !== undefined) try { process.kill(reporterPid, "SIGKILL"); } catch {}
    if (ctx.trusted) await reportFailure(ctx.trusted, siteCa(), "switchroot", e as Error, (l) => sc.log(l), ctx.image?.digest);
    await rescue({ failure: { step: "switchroot", title: "Switching to the new root", error: e as Error }, tty: ttyOf(),
      sshd: ctx.sshdPid !== undefined, then: options.rescue, ownChildren: own() });
  }
}

/**
 * The mount engine's status sockets live in /run, which moves into the new root; bind them back into the initramfs's
 * fresh /run so `airroot status /mnt/image` works from the 2222 debug sshd after switch_root. Best effort: a failure
 * here only costs that convenience, never the boot.
 */
function keepStatusSockets(moved: string, target: string): void {
  mkdirSync(target, { recursive: true, mode: 0o700 });
  if (!existsSync(moved)) return;
  try { mount({ source: moved, target, fstype: null, flags: MS_BIND }); } catch { /* status from 2222 unavailable */ }
}
