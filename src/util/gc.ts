// Handing memory back once a thread goes quiet: a full collection, then let JSC drop what it can regenerate (compiled
// code, unlinked bytecode) and return free pages. Idle-time only: the JIT recompiles within the first milliseconds of
// the next burst. Bun marks Bun.shrink deprecated: guarded, so a Bun without it only loses that part.
export function giveMemoryBack(): void {
  Bun.gc(true);
  (Bun as { shrink?: () => void }).shrink?.();
}
