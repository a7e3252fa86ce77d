// One GET of a small document a node must trust only after checking it (the signed image manifest): the size cap is
// enforced as bytes arrive (a chunked endless body is cut at the cap, never buffered whole), redirects are refused
// (the node fetches only from the URLs its config or command line names; a redirect could go to plain http or to
// a host outside the site), and one deadline bounds the whole exchange.

export interface BoundedFetchOptions {
  /** PEM of the CA(s) that must have signed the server's certificate; undefined: the system store. */
  ca?: string;
  maxBytes: number;
  timeoutMs: number;
}

export class BoundedFetchError extends Error {
  constructor(message: string, readonly reason: "status" | "redirect" | "too-large" | "timeout" | "network") {
    super(message);
    this.name = "BoundedFetchError";
  }
}

/** GETs `url` and returns its body; throws a BoundedFetchError naming what went wrong. */
export async function fetchBounded(url: string, o: BoundedFetchOptions): Promise<Uint8Array> {
  const ac = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; ac.abort(); }, o.timeoutMs);
  try {
    let res: Response;
    try {
      res = await fetch(url, { tls: o.ca ? { ca: o.ca } : undefined, redirect: "manual", signal: ac.signal } as RequestInit);
    } catch (e) {
      throw timedOut ? new BoundedFetchError(`no reply within ${o.timeoutMs / 1000} s`, "timeout")
        : new BoundedFetchError((e as Error).message, "network");
    }
    if (res.status >= 300 && res.status < 400) {
      res.body?.cancel().catch(() => {});
      const to = (res.headers.get("location") ?? "").slice(0, 200);
      throw new BoundedFetchError(`HTTP ${res.status} redirect${to ? ` to ${to}` : ""} refused: fetch only from the configured URLs`, "redirect");
    }
    if (res.status !== 200) { res.body?.cancel().catch(() => {}); throw new BoundedFetchError(`HTTP ${res.status}`, "status"); }
    const declared = Number(res.headers.get("content-length") ?? "0");
    if (declared > o.maxBytes) { res.body?.cancel().catch(() => {}); throw new BoundedFetchError(`reply of ${declared} bytes exceeds the ${o.maxBytes}-byte limit`, "too-large"); }
    const chunks: Uint8Array[] = [];
    let size = 0;
    if (res.body) {
      const reader = res.body.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          size += value.length;
          if (size > o.maxBytes) {
            reader.cancel().catch(() => {});
            throw new BoundedFetchError(`reply exceeds the ${o.maxBytes}-byte limit (cut after ${size} bytes)`, "too-large");
          }
          chunks.push(value);
        }
      } catch (e) {
        if (e instanceof BoundedFetchError) throw e;
        throw timedOut ? new BoundedFetchError(`reply not complete within ${o.timeoutMs / 1000} s`, "timeout")
          : new BoundedFetchError((e as Error).message, "network");
      }
    }
    const out = new Uint8Array(size);
    let at = 0;
    for (const c of chunks) { out.set(c, at); at += c.length; }
    return out;
  } finally {
    clearTimeout(timer);
  }
}
