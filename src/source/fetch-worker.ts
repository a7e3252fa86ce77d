// The fetch thread's entry point (see fetch-thread.ts): range GETs for the main thread, with this thread's own
// connection pools. Blocks to fill arrive as views of shared memory; only a verdict goes back.
import { directFetcher, SourceFault, type PieceAllocator, type RangeFetcher } from "./http";
import type { FetchRequest, FetchResponse } from "./fetch-thread";
import { giveMemoryBack } from "../util/gc";

declare const self: Worker;
let fetchers: RangeFetcher[] = [];

function reply(m: FetchResponse): void { self.postMessage(m); }

self.onmessage = (ev: MessageEvent<FetchRequest>) => {
  const m = ev.data;
  if (m.t === "init") { fetchers = m.urls.map((u) => directFetcher(u, m.pool)); return; }
  if (m.t === "idle") { giveMemoryBack(); return; }
  if (m.t === "destroy") {
    void Promise.all(fetchers.map((f) => f.destroy().catch(() => {}))).then(() => reply({ t: "destroyed", id: m.id }));
    return;
  }
  const f = fetchers[m.src];
  // The main thread's blocks, handed out in order; a retry inside getRange gives them back (in order) and takes again.
  let alloc: PieceAllocator | undefined;
  if (m.parts) {
    const avail = [...m.parts];
    alloc = { take: () => { const p = avail.shift(); if (!p) throw new Error("BUG: fetch thread ran out of blocks"); return p; }, release: (p) => avail.push(p) };
  }
  f.get(m.start, m.length, m.timeouts, m.expect, m.pieceSize, alloc).then(
    (r) => reply({ t: "ok", id: m.id, size: r.size, validator: r.validator, lastModifiedMs: r.lastModifiedMs,
      order: m.parts ? r.parts.map((p) => m.parts!.indexOf(p)) : undefined, data: m.parts ? undefined : r.parts }),
    (e) => reply({ t: "fault", id: m.id, reason: e instanceof SourceFault ? e.reason : String((e as Error)?.message ?? e),
      imageChanged: e instanceof SourceFault && e.imageChanged, internal: !(e instanceof SourceFault) }),
  );
};
