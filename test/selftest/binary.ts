// The private copy of the built binary the selftest tests run (.cache/selftest/airroot), built once per test run so
// that parallel builds of dist/airroot by others cannot race with it.
import { join } from "node:path";

export const repo = join(import.meta.dir, "..", "..");
export const binary = join(repo, ".cache", "selftest", "airroot");
let built: Promise<void> | undefined;

export function buildBinary(): Promise<void> {
  return (built ??= (async () => {
    const p = Bun.spawn([join(repo, "node_modules", ".bin", "bun"), "run", "build.ts"], {
      cwd: repo, env: { ...process.env, AIRROOT_OUT: ".cache/selftest/airroot" }, stdout: "pipe", stderr: "pipe",
    });
    const timer = setTimeout(() => p.kill("SIGKILL"), 60_000);
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    clearTimeout(timer);
    if (code !== 0) throw new Error(`building ${binary} failed (${code}): ${err || out}`);
  })());
}
