// Sequential-access detector: tracks a few read streams and grows a readahead window for each one that keeps going.

export interface ReadaheadOptions {
  maxBytes: number;     // largest window
  initialBytes: number; // window after the second sequential read
  maxStreams?: number;  // interleaved sequential readers tracked at once (default 4)
}

interface Stream { next: number; window: number; issued: number }

export class Readahead {
  private streams: Stream[] = []; // most recently used last
  private readonly maxStreams: number;

  constructor(private readonly o: ReadaheadOptions) {
    this.maxStreams = o.maxStreams ?? 4;
  }

  /**
   * Records a read of [offset, offset+length) and returns the byte range to prefetch now, if any.
   * A read near the end of a known stream counts as sequential (the kernel sends several reads concurrently, so they
   * may arrive slightly out of order); any other read starts a new stream with no readahead (random access).
   */
  observe(offset: number, length: number): { start: number; end: number } | null {
    const end = offset + length;
    const i = this.streams.findIndex((s) => {
      const slack = Math.max(s.window, this.o.initialBytes, length);
      return offset >= s.next - slack && offset <= s.next + slack;
    });
    if (i < 0) {
      this.streams.push({ next: end, window: 0, issued: end });
      if (this.streams.length > this.maxStreams) this.streams.shift();
      return null;
    }
    const s = this.streams[i];
    this.streams.splice(i, 1);
    this.streams.push(s);
    if (end <= s.next) return null; // a late read behind the stream's head: nothing new to learn
    s.next = end;
    if (this.o.maxBytes <= 0) return null;
    s.window = Math.min(this.o.maxBytes, Math.max(this.o.initialBytes, s.window * 2));
    // Top up in batches (when less than half a window is left ahead) so fetches stay large, like the kernel's
    // asynchronous readahead, instead of one small request per read.
    if (s.issued - s.next >= s.window / 2) return null;
    const from = Math.max(s.next, s.issued), to = s.next + s.window;
    if (to <= from) return null;
    s.issued = to;
    return { start: from, end: to };
  }

  /**
   * The caller fetched only up to `end` of the range observe() just returned (its readahead budget was spent): the
   * stream must not count the rest as issued, or it would never ask for it again.
   */
  shortened(end: number): void {
    const s = this.streams[this.streams.length - 1]; // observe() moved the stream it answered for to the end
    if (s && end < s.issued) s.issued = Math.max(s.next, end);
  }

  /** The current windows (for status and tests). */
  windows(): number[] { return this.streams.map((s) => s.window); }
}
