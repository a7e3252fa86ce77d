// Raw-socket clients for the HTTPS listener's deadline tests: a TCP connection that says nothing, a TLS connection
// that sends what the test writes, a whole GET, and the time until the server closed a connection.
import net from "node:net";
import tls from "node:tls";

export function rawConnect(port: number, host = "127.0.0.1"): Promise<net.Socket> {
  return new Promise((ok) => { const s = net.connect(port, host, () => ok(s)); s.on("error", () => {}); });
}

export function tlsConnect(port: number, ca: string, host = "127.0.0.1"): Promise<tls.TLSSocket> {
  return new Promise((ok, fail) => { const s = tls.connect({ host, port, ca, servername: "localhost" }, () => ok(s)); s.once("error", fail); });
}

/** One GET / with Connection: close; resolves with the whole reply as text. */
export async function getOnce(port: number, ca: string): Promise<string> {
  const s = await tlsConnect(port, ca);
  return await new Promise((ok) => {
    let out = ""; s.on("data", (d) => { out += d; }); s.on("close", () => ok(out)); s.on("error", () => ok(out));
    s.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  });
}

/** Resolves with the ms from t0 until the server closed the connection; rejects (and closes it) after maxMs. */
export function closedAfter(sock: net.Socket, t0: number, maxMs: number): Promise<number> {
  return new Promise((ok, fail) => {
    const t = setTimeout(() => { sock.destroy(); fail(new Error(`still open after ${maxMs} ms`)); }, maxMs);
    sock.on("error", () => {});
    sock.once("close", () => { clearTimeout(t); ok(performance.now() - t0); });
  });
}

/** A TLS record header announcing a 512-byte ClientHello, then only its first bytes. */
export const HALF_CLIENT_HELLO = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, ...new Array(20).fill(7)]);

/**
 * startHttps on 127.0.0.1 (a free port) with a test PKI, the given deadlines and a handler answering "ok\n": the
 * listener the deadline tests hold connections against. raw/secure/get connect to it.
 */
export async function deadlineServer(deadlines: import("../../src/server/deadlines").DeadlineOptions) {
  const { join } = await import("node:path");
  const { readFileSync } = await import("node:fs");
  const { scratchDir } = await import("./tmp");
  const { makeTestPki } = await import("./pki");
  const { startHttps } = await import("../../src/server/https");
  const pki = makeTestPki(join(scratchDir(), "pki"));
  const ca = readFileSync(pki.caCert, "utf8");
  const srv = await startHttps({
    listen: [{ host: "127.0.0.1", port: 0 }], cert: readFileSync(pki.serverCert, "utf8"), key: readFileSync(pki.serverKey, "utf8"),
    clientCa: ca, deadlines, handler: async () => new Response("ok\n"),
  });
  const port = srv.addresses[0].port;
  return { srv, port, ca, raw: () => rawConnect(port), secure: () => tlsConnect(port, ca), get: () => getOnce(port, ca) };
}
