// The optional plain-HTTP listener of `airroot serve` (`--http-listen`, config `http-port`), for firmware that
// cannot do TLS (BIOS PXE ROMs, iPXE builds without HTTPS, UEFI HTTP boot without an enrolled CA). It serves only
// what netboot.ts routes under /boot/ and refuses everything else: the node API needs TLS (mutual TLS for /self/*,
// the site CA for enrollment answers), and images are never offered in the clear either, so a node can only ever
// be given https image URLs. Same request adapter and the same connection deadlines as the HTTPS listener.
import net from "node:net";
import type { Logger } from "../util/log.ts";
import { ConnectionDeadlines, type DeadlineOptions } from "./deadlines.ts";
import { closeAll, listenAll, requestServer, type Handler } from "./https.ts";

export interface HttpOptions {
  listen: { host: string; port: number }[];
  handler: Handler;
  idleTimeoutMs?: number;    // default 120 s without any traffic on a connection
  deadlines?: DeadlineOptions;
  log?: Logger;
}

export interface HttpServer {
  addresses: { host: string; port: number }[];
  connections(): { open: number; cut: Record<string, number> };
  close(): Promise<void>;
}

const NO_PEER = { present: false, authorized: false } as const;

export async function startHttp(o: HttpOptions): Promise<HttpServer> {
  const deadlines = new ConnectionDeadlines(o.deadlines, (phase, sock) =>
    o.log?.debug(`http: connection from ${sock.remoteAddress ?? "?"} cut: ${phase} deadline passed`));
  // Requests carry no body here (GET/HEAD only get anything but a refusal); 4 KiB is plenty for a refusal to read.
  const httpServer = requestServer({ handler: o.handler, maxBodyBytes: 4096, deadlines, log: o.log, label: "http", peer: () => NO_PEER });
  const { servers, addresses } = await listenAll("http", o.listen, () => net.createServer((sock) => {
    // No handshake on plain TCP: the connection is at once in the request-head phase.
    deadlines.connected(sock);
    deadlines.secured(sock);
    sock.setTimeout(o.idleTimeoutMs ?? 120_000, () => sock.destroy());
    httpServer.emit("connection", sock);
  }));
  return {
    addresses,
    connections: () => ({ open: deadlines.size, cut: { ...deadlines.cut } }),
    close: () => closeAll(servers, deadlines, httpServer),
  };
}
