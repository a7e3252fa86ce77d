// A node's first contact with its site, as `airroot enroll` (and later `airroot init`) runs it: find the servers,
// enroll on the first that answers, fetch the config, certify the SSH host keys, report the stage. Servers are
// tried in order; only "unreachable" and server errors (5xx) move on to the next one, a refusal (4xx) is final.
import { discover } from "./discover.ts";
import { enrollNode, NodeApi, type NodeCredential, type SshCertReply, type TpmProver } from "./api.ts";
import { ApiCallError } from "./http.ts";
import type { NodeConfig } from "../server/selfapi.ts";
import { mapConfigUrls } from "./zone.ts";

export interface FirstContactOptions {
  siteCa: string;                 // PEM of the site CA (from the initramfs)
  servers?: string[];             // base URLs; default: multicast discovery
  macs: string[];
  uuid?: string;
  name?: string;
  tpm?: TpmProver;
  hostKeys?: string[];            // OpenSSH public key lines to certify
  stage?: string;                 // stage reported at the end, default "enrolled"
  discoveryTimeoutMs?: number;    // default 3000
  /** Applied to every URL in the server's config (the node gives zone-less link-local hosts its boot interface). */
  mapUrl?: (url: string) => string;
  log?: (line: string) => void;
}

export interface FirstContactResult {
  server: string;
  credential: NodeCredential;
  config: NodeConfig;
  hostCertificates: SshCertReply | null;
}

const retryable = (e: unknown) => e instanceof ApiCallError && (e.status === 0 || e.status >= 500);

/** Runs `fn` against each server in turn until one gives a definitive answer. */
export async function withFailover<T>(servers: string[], fn: (server: string) => Promise<T>, log?: (l: string) => void): Promise<{ server: string; value: T }> {
  if (servers.length === 0) throw new Error("no server to contact");
  let last: unknown;
  for (const server of servers) {
    try { return { server, value: await fn(server) }; } catch (e) {
      if (!retryable(e)) throw e;
      log?.(`${(e as Error).message}; trying the next server`);
      last = e;
    }
  }
  throw last;
}

/** The servers to talk to: the given list, else every server that answers multicast discovery for this node. */
export async function findServers(o: Pick<FirstContactOptions, "servers" | "macs" | "uuid" | "discoveryTimeoutMs" | "log">): Promise<string[]> {
  if (o.servers?.length) return o.servers;
  const found = await discover({ macs: o.macs, uuid: o.uuid, timeoutMs: o.discoveryTimeoutMs ?? 3000 });
  const servers = [...new Set(found.flatMap((f) => f.api))];
  if (servers.length === 0) throw new Error("no server answered discovery (is this node added on a server, and is it on the same link?)");
  o.log?.(`discovered ${servers.join(" ")}`);
  return servers;
}

/**
 * What a node does with a valid credential: fetch its config, certify its SSH host keys, report the stage.
 * `server` (the one that enrolled us) is tried first, after that the one that answered last. A 401
 * (ApiCallError.needsEnrollment) is final: the caller decides whether to re-enroll.
 */
export async function useCredential(o: FirstContactOptions, servers: string[], server: string, credential: NodeCredential, detail: string): Promise<FirstContactResult> {
  // The server that answered last goes first: a server that died or hung mid-boot costs one timeout, not one per call.
  let first = server;
  const order = (list: string[]) => [first, ...list.filter((s) => s !== first)];
  const call = async <T>(fn: (api: NodeApi) => Promise<T>, list = servers) => {
    const r = await withFailover(order(list), async (s) => {
      const api = new NodeApi(s, o.siteCa, credential);
      try { return await fn(api); } finally { await api.close(); }
    }, o.log);
    first = r.server;
    return r;
  };
  const got = await call((api) => api.config());
  const config = o.mapUrl ? mapConfigUrls(got.value, o.mapUrl) : got.value;
  const all = [...new Set([...servers, ...config.servers])];
  const hostCertificates = o.hostKeys?.length ? (await call((api) => api.sshCertificates(o.hostKeys!), all)).value : null;
  await call((api) => api.status(o.stage ?? "enrolled", detail), all);
  return { server: got.server, credential, config, hostCertificates };
}

export async function firstContact(o: FirstContactOptions): Promise<FirstContactResult> {
  const servers = await findServers(o);
  const { server, value: credential } = await withFailover(servers, (s) => enrollNode(s, o.siteCa, { macs: o.macs, uuid: o.uuid, name: o.name }, o.tpm), o.log);
  // After enrollment every server of the site accepts the certificate; prefer the one that enrolled us.
  return await useCredential(o, servers, server, credential, `first contact via ${server}`);
}
