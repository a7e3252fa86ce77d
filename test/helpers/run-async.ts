// Runs a command asynchronously with a time bound. Tests that serve a FUSE mount from their own process must never
// use spawnSync on that mount: a blocked event loop cannot answer the kernel, and the mount deadlocks.

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function run(cmd: string[], opts: { timeoutMs?: number; cwd?: string } = {}): Promise<RunResult> {
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", cwd: opts.cwd });
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
  try {
    const [stdout, stderr] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
    const code = await p.exited;
    return { code, stdout, stderr };
  } finally {
    clearTimeout(timer);
  }
}

/** run() that throws with the command's output when it exits non-zero. */
export async function runOk(cmd: string[], opts: { timeoutMs?: number; cwd?: string } = {}): Promise<string> {
  const r = await run(cmd, opts);
  if (r.code !== 0) throw new Error(`${cmd.join(" ")} exited ${r.code}: ${r.stderr || r.stdout}`);
  return r.stdout;
}
