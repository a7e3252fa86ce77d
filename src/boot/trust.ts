// The boot's trust step: find the servers, unseal the TPM credential or enroll, fetch the node config and SSH host
// certificates, lock the TPM credential for the rest of the boot; and the stage reports that follow once trusted.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { establishTrust, type TrustResult } from "../client/trust";
import { NodeApi } from "../client/api";
import { localMacs, smbiosUuid } from "../client/identity";
import { ApiCallError } from "../client/http";
import { parseHttpsUrl } from "../client/zone";
import { FinalError, WaitError } from "./sequence";
import { openTpm } from "../tpm/tpm";
import { lockCredential } from "../tpm/credential";

/** What the rest of the boot needs from the trust step. */
export interface Trusted extends TrustResult {
  /** Every API server, the one that answered first. */
  servers: string[];
  uuid?: string;
}

/** TPM devices in preference order: the kernel's resource manager first (it flushes our transient objects). */
export const TPM_DEVICES = ["/dev/tpmrm0", "/dev/tpm0"];

/** The TPM spec for establishTrust ("device:/dev/tpmrm0"), or undefined when the node has none. */
export function findTpm(devices = TPM_DEVICES): string | undefined {
  const d = devices.find((p) => existsSync(p));
  return d ? `device:${d}` : undefined;
}

/** Server base URLs: the command line, else the site's list in the initramfs (one URL a line, # comments). */
export function configuredServers(cmdline: string[], siteServersFile: string): string[] {
  if (cmdline.length) return cmdline;
  let text = "";
  try { text = readFileSync(siteServersFile, "utf8"); } catch { return []; }
  const out: string[] = [];
  for (const raw of text.split("\n").slice(0, 256)) {
    const l = raw.replace(/#.*/, "").trim();
    if (!l) continue;
    let u: URL;
    try { u = parseHttpsUrl(l); } catch { throw new FinalError(`${siteServersFile}: "${l.slice(0, 80)}" is not a URL`); }
    if (u.protocol !== "https:") throw new FinalError(`${siteServersFile}: "${l.slice(0, 80)}" must be an https:// URL`);
    out.push(l.replace(/\/+$/, ""));
  }
  return out;
}

/** Public host key lines for the given private key paths. */
export function publicHostKeys(keys: string[]): string[] {
  return keys.map((k) => readFileSync(`${k}.pub`, "utf8").trim());
}

export interface TrustStepOptions {
  siteDir: string;
  servers: string[];             // airroot.server
  noTpm: "refuse" | "warn";
  /** MACs of the interfaces the network step configured; default every physical NIC's. */
  macs?: string[];
  hostKeys: string[];            // private key paths from the ssh step
  tpmDevices?: string[];
  /** Applied to every server, image and manifest URL (the boot interface's zone for zone-less link-local hosts). */
  mapUrl?: (url: string) => string;
  log: (line: string) => void;
}

/** Failures that waiting fixes: no server answers (unreachable, 5xx, nothing found by discovery). */
export function serversAway(e: unknown): boolean {
  if (e instanceof ApiCallError) return e.status === 0 || e.status >= 500;
  return e instanceof Error && /^no server answered discovery/.test(e.message);
}

/** Runs the trust step; the returned console line says how the node got its credential. */
export async function runTrust(o: TrustStepOptions): Promise<{ trusted: Trusted; line: string }> {
  const caFile = join(o.siteDir, "ca.pem");
  if (!existsSync(caFile)) throw new FinalError(`site CA ${caFile} is missing: build the initramfs with SITE=DIR from \`airroot serve site-config\``);
  const siteCa = readFileSync(caFile, "utf8");
  const macs = o.macs?.length ? o.macs : localMacs();
  const uuid = smbiosUuid();
  if (!macs.length && !uuid) throw new FinalError("this node has neither a NIC MAC address nor an SMBIOS UUID to identify itself by");
  const tpm = findTpm(o.tpmDevices);
  if (!tpm) {
    if (o.noTpm === "refuse")
      throw new FinalError(`no TPM (${(o.tpmDevices ?? TPM_DEVICES).join(", ")}): the node credential cannot be kept across boots; enable the TPM in the firmware, or boot with airroot.notpm=warn (the node then enrolls every boot and must be armed each time)`);
    o.log("warning: no TPM: enrolling without one (airroot.notpm=warn); the node must be armed for every boot");
  }
  const map = o.mapUrl ?? ((u: string) => u);
  const servers = configuredServers(o.servers, join(o.siteDir, "servers")).map(map);
  let r: TrustResult;
  try {
    r = await establishTrust({
      siteCa, servers, macs, uuid, hostKeys: publicHostKeys(o.hostKeys), stage: "trusted", tpm, noTpm: o.noTpm,
      lock: true, mapUrl: o.mapUrl, log: o.log,
    });
  } catch (e) {
    // A deployment server restarting mid-boot: the step waits for it (airroot.roottimeout bounds that).
    if (serversAway(e)) throw new WaitError("deployment server", (e as Error).message);
    throw e;
  }
  const all = [r.server, ...new Set([...servers, ...r.config.servers].filter((s) => s !== r.server))];
  const line = r.origin === "enrolled"
    ? `Enrolled as ${r.credential.node} via ${r.enrolledVia ?? r.server}${r.enrolledVia && r.enrolledVia !== r.server ? `, configured via ${r.server}` : ""}${r.sealedInTpm ? " (credential sealed in the TPM)" : ""}`
    : `Using the credential sealed in the TPM: node ${r.credential.node} via ${r.server}`;
  return { trusted: { ...r, servers: all, uuid }, line: r.locked ? `${line}; TPM credential locked for this boot` : line };
}

/**
 * Reports a boot stage to the servers (first that answers), within `budgetMs` in all. Never fails the boot: the node
 * boots even while every server is away (or black-holed), it just shows an older stage in `airroot node list`.
 */
export async function reportStage(t: Pick<Trusted, "servers" | "credential">, siteCa: string, stage: string, detail: string, log: (l: string) => void,
  digest?: string, budgetMs = 5000): Promise<void> {
  await reportBounded(t.servers, stage, log, budgetMs, async (s) => {
    const api = new NodeApi(s, siteCa, t.credential);
    try { await api.status(stage, detail.slice(0, 500), digest); } finally { await api.close(); }
  });
}

/**
 * Sends one report through `send` to each server in turn until one takes it, within `budgetMs` in all; a report that
 * could not be made is one warning through `log`, never an error.
 */
export async function reportBounded(servers: string[], stage: string, log: (l: string) => void, budgetMs: number,
  send: (server: string) => Promise<void>): Promise<void> {
  const errors: string[] = [];
  const attempt = async (): Promise<boolean> => {
    for (const s of servers) {
      try { await send(s); return true; } catch (e) { errors.push((e as Error).message); }
    }
    return false;
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<"timeout">((ok) => { timer = setTimeout(() => ok("timeout"), budgetMs); });
  const r = await Promise.race([attempt(), timedOut]);
  clearTimeout(timer);
  if (r === true) return;
  log(`warning: could not report stage ${stage}${r === "timeout" ? ` within ${budgetMs / 1000} s` : ""}: ${errors.join("; ") || "no answer"}`);
}

/**
 * A failed boot, reported before the rescue shell so `airroot node list` shows "failed: STEP" instead of the last good
 * stage: stage "failed", detail "STEP: reason". Like every report it never fails the boot; a report that cannot be
 * made is printed on the console (`log`).
 */
export async function reportFailure(t: Pick<Trusted, "servers" | "credential">, siteCa: string, step: string, error: Error,
  log: (l: string) => void, digest?: string, budgetMs = 5000): Promise<void> {
  await reportStage(t, siteCa, "failed", `${step}: ${error.message}`, log, digest, budgetMs);
}

/**
 * Before a rescue shell (or airroot.shell) when the trust step did not lock the credential: extend the lock PCR so
 * no one at the console can unseal the node's credential in this boot. Exactly once per boot: a second extend would
 * make the sealed credential look "changed" (evicted) instead of "locked". Best effort, bounded; returns a line to log.
 */
export async function lockBeforeRescue(spec: string | undefined = findTpm()): Promise<string | undefined> {
  if (!spec) return undefined;
  try {
    const t = await openTpm(spec, { timeoutMs: 10_000 });
    try { await lockCredential(t); } finally { await t.close(); }
    return "TPM credential locked for the rest of this boot (rescue)";
  } catch (e) {
    return `warning: could not lock the TPM credential before rescue: ${(e as Error).message}`;
  }
}
