// A FUSE session without the kernel, for dispatch tests: request frames go in through handleFrame, reply frames are
// captured whole (each one checked to be exactly as long as its header says) and decoded.
import { expect } from "bun:test";
import * as codec from "../../src/fuse/codec";
import { Op } from "../../src/fuse/protocol";
import { FuseSession, type SessionOptions } from "../../src/fuse/session";
import { Tree, type ExposedFile } from "../../src/fuse/tree";

export interface Reply { unique: bigint; error: number; payload: Uint8Array }

export function u32s(...xs: number[]): Uint8Array {
  const b = new Uint8Array(xs.length * 4);
  xs.forEach((x, i) => new DataView(b.buffer).setUint32(i * 4, x >>> 0, true));
  return b;
}

/** The body of a READ request for `size` bytes at `offset`. */
export function readIn(offset: number, size: number): Uint8Array {
  const b = new Uint8Array(40);
  const v = new DataView(b.buffer);
  v.setBigUint64(8, BigInt(offset), true);
  v.setUint32(16, size, true);
  return b;
}

/** `onReply` sees each reply (and the whole frame's length) before it is kept; it may throw, as a failing writer. */
export function capturedSession(files: ExposedFile[], opts: SessionOptions = {},
  onReply?: (r: Reply, frameBytes: number) => void) {
  const replies: Reply[] = [];
  const s = new FuseSession(new Tree(files), (chunks) => {
    const total = chunks.reduce((n, c) => n + c.length, 0);
    const f = new Uint8Array(total);
    let o = 0;
    for (const c of chunks) { f.set(c, o); o += c.length; }
    const h = codec.decodeReplyHeader(f);
    expect(h.len).toBe(total); // whole frames only
    const r = { unique: h.unique, error: h.error, payload: f.subarray(16) };
    onReply?.(r, total);
    replies.push(r);
  }, opts);
  let unique = 100n;
  const send = (op: number, nodeid: number, body?: Uint8Array) => {
    const u = unique++;
    s.handleFrame(codec.encodeRequest(op, u, nodeid, body));
    return u;
  };
  const last = () => replies[replies.length - 1]!;
  const init = (minor = 45, flags = 0xffffffff) => send(Op.INIT, 0, new Uint8Array([...u32s(7, minor, 131072, flags, 0), ...new Uint8Array(44)]));
  return { s, replies, send, last, init };
}
