// A real swtpm (TPM 2.0 simulator) on a loopback TCP port with its own state dir, plus tpm2-tools aimed at it.
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { freePort, waitForPort } from "./ports";

export interface Swtpm {
  host: string;
  port: number;              // command channel
  spec: string;              // for --tpm / openTransport: "swtpm:127.0.0.1:PORT"
  stateDir: string;
  /** Runs a tpm2-tools command against this swtpm; throws with stderr on failure unless allowFail. */
  tools(args: string[], opts?: { allowFail?: boolean; cwd?: string }): { code: number; stdout: string; stderr: string };
  stop(): Promise<void>;
}

/** Starts swtpm on 127.0.0.1 with state in `stateDir` (a fresh dir is a fresh TPM: new seeds, empty NV). */
export async function startSwtpm(stateDir: string): Promise<Swtpm> {
  const dir = resolve(stateDir);
  mkdirSync(dir, { recursive: true });
  const host = "127.0.0.1";
  // swtpm needs two adjacent ports; retry a few times in case port+1 is taken.
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort(host);
    const proc: Subprocess = Bun.spawn(["swtpm", "socket", "--tpm2",
      "--server", `type=tcp,port=${port},bindaddr=${host}`, "--ctrl", `type=tcp,port=${port + 1},bindaddr=${host}`,
      "--flags", "startup-clear", "--tpmstate", `dir=${dir}`], { stdout: "ignore", stderr: "pipe" });
    // If swtpm cannot bind (port+1 taken), it exits at once: stop waiting then and try other ports.
    const up = await Promise.race([waitForPort(host, port, 5000).then(() => true, () => false), proc.exited.then(() => false)]);
    if (!up) {
      proc.kill("SIGKILL"); await proc.exited;
      continue;
    }
    const env = { ...process.env, TPM2TOOLS_TCTI: `swtpm:host=${host},port=${port}` };
    return {
      host, port, spec: `swtpm:${host}:${port}`, stateDir: dir,
      tools(args, o = {}) {
        const r = Bun.spawnSync(args, { env, cwd: o.cwd ?? dir, stdout: "pipe", stderr: "pipe", timeout: 60_000 });
        const res = { code: r.exitCode ?? -1, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
        if (res.code !== 0 && !o.allowFail) throw new Error(`${args.join(" ")} failed (${res.code}): ${res.stderr}`);
        return res;
      },
      async stop() { proc.kill("SIGTERM"); await Promise.race([proc.exited, Bun.sleep(3000)]); proc.kill("SIGKILL"); await proc.exited; },
    };
  }
  throw new Error("could not start swtpm on a free loopback port after 5 attempts");
}

export const swtpmStateDir = (base: string, name = "tpm") => join(base, name);
