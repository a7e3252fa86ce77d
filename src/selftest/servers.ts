// In-process HTTPS image servers for the selftest (Bun.serve with TLS on a loopback address and an ephemeral port,
// serving an images dir through the product's serveImages), with two faults a real deployment can have: serving a
// tampered copy, and dying in the middle of a transfer.
import { serveImages } from "../server/static";

export interface ServerOptions {
  host: "127.0.0.1" | "::1";
  certPem: string;
  keyPem: string;
  imagesDir: string;
}

export class ImageServer {
  /** Requests answered with image bytes (206/200 GET) since the last reset(). */
  dataRequests = 0;
  private dir: string;
  private stopAfter?: number;
  private server?: ReturnType<typeof Bun.serve>;
  private stopping?: Promise<void>;
  private boundPort = 0; // kept after stop(): URLs keep naming the (now dead) server

  private constructor(private readonly opts: ServerOptions) { this.dir = opts.imagesDir; }

  static start(opts: ServerOptions): ImageServer {
    const s = new ImageServer(opts);
    s.listen();
    return s;
  }

  get port(): number { return this.boundPort; }
  get running(): boolean { return this.server !== undefined && this.stopping === undefined; }
  /** https URL of a file under /images/ (IPv6 in brackets). */
  url(name: string): string {
    const host = this.opts.host.includes(":") ? `[${this.opts.host}]` : this.opts.host;
    return `https://${host}:${this.port}/images/${name}`;
  }

  /** Serve from another images dir from now on (e.g. the tampered copy), and forget any planned stop. */
  serveFrom(dir: string): void { this.dir = dir; this.stopAfter = undefined; this.dataRequests = 0; }

  /** Stop the whole server (dropping open connections mid-transfer) once it has answered `n` more data requests. */
  dieAfter(n: number): void { this.stopAfter = this.dataRequests + n; }

  /** Stops listening and drops every connection; the port is released. */
  stop(): Promise<void> {
    return (this.stopping ??= (async () => {
      const server = this.server;
      this.server = undefined;
      await server?.stop(true);
    })());
  }

  private listen(): void {
    this.server = Bun.serve({
      hostname: this.opts.host,
      port: 0, // ephemeral: never collide with anything else on the machine
      tls: { cert: this.opts.certPem, key: this.opts.keyPem },
      fetch: async (req) => {
        const res = (await serveImages(req, this.dir)) ?? new Response("not found\n", { status: 404 });
        if (req.method === "GET" && (res.status === 206 || res.status === 200)) {
          this.dataRequests++;
          if (this.stopAfter !== undefined && this.dataRequests >= this.stopAfter) {
            this.stopAfter = undefined;
            // Die while this reply (and any others in flight) is still being sent, like a crashed server.
            setTimeout(() => void this.stop(), 1);
          }
        }
        return res;
      },
      error: (e) => new Response(`server error: ${e.message}\n`, { status: 500 }),
    });
    this.boundPort = this.server.port ?? 0;
  }
}
