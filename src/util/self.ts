// How to start another copy of this program: the compiled binary re-executes itself; in development
// (`bun src/cli/main.ts`) the Bun runtime runs the entry script again.
export function isCompiledBinary(): boolean {
  return import.meta.path.startsWith("/$bunfs/") || import.meta.path.startsWith("B:/~BUN/");
}

/** argv prefix that starts airroot again (add the subcommand and its arguments after it). */
export function selfCommand(): string[] {
  if (isCompiledBinary()) return [process.execPath];
  const entry = process.argv[1];
  if (!entry) throw new Error("cannot find airroot's entry script to start a child process");
  return [process.execPath, entry];
}
