// The optional plain-HTTP listener of `airroot serve` (`--http-listen`, config `http-port`), for firmware that
// cannot do TLS (BIOS PXE ROMs, iPXE builds without HTTPS, UEFI HTTP boot without an enrolled CA). It serves only
// what netboot.ts routes under /boot/ and refuses everything else: the node API needs TLS (mutual TLS for /self/*,
// the site CA for enrollment answers), and images are never offered in the clear either, so a node can only ever
// be given https image URLs. Same request adapter and the same connection deadlines as the HTTPS listener.
import net from "node:net";
import type { Logger } from "../util/log.ts";
import { ConnectionDeadlines, type DeadlineOptions } from "./deadlines.ts";
import { requestServer, type Handler } from "./https.ts";

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
  const servers: net.Server[] = [];
  const addresses: { host: string; port: number }[] = [];
  try {
    for (const l of o.listen) {
      const s = net.createServer((sock) => {
        // No handshake on plain TCP: the connection is at once in the request-head phase.
        deadlines.connected(sock);
        deadlines.secured(sock);
        sock.setTimeout(o.idleTimeoutMs ?? 120_000, () => sock.destroy());
        httpServer.emit("connection", sock);
      });
      await new Promise<void>((ok, fail) => { s.once("error", fail); s.listen(l.port, l.host, () => { s.off("error", fail); ok(); }); });
      servers.push(s);
      const a = s.address();
      addresses.push({ host: l.host, port: typeof a === "object" && a ? a.port : l.port });
    }
  } catch (e) {
    for (const s of servers) s.close();
    throw new Error(`http: cannot listen on ${o.listen.map((l) => `${l.host}:${l.port}`).join(", ")}: ${(e as Error).message}`);
  }
  return {
    addresses,
    connections: () => ({ open: deadlines.size, cut: { ...deadlines.cut } }),
    async close() {
      const closed = Promise.all(servers.map((s) => new Promise<void>((ok) => s.close(() => ok()))));
      deadlines.destroyAll();
      await Promise.race([closed, Bun.sleep(2000)]);
      httpServer.close();
    },
  };
}
