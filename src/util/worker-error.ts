// Bun's ErrorEvent.message for an uncaught error in a Worker is the whole formatted report (a source excerpt, the
// error line, a stack). A log line wants only the error itself.

/** "TypeError: ..." out of a Worker's error event, or its first line when no such line is found. */
export function workerErrorText(e: { message?: string } | undefined): string {
  const text = String(e?.message ?? "unknown error");
  const line = text.split("\n").map((l) => l.trim()).find((l) => /^[A-Za-z]*Error\b.*: /.test(l));
  return (line ?? text.split("\n")[0].trim()).slice(0, 300);
}
