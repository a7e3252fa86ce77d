// A private TPM 2.0 simulator for the selftest: swtpm on two adjacent loopback TCP ports with a fresh state dir
// (a fresh dir is a fresh TPM: new seeds, empty NV, PCRs at their reset values).
import { mkdirSync } from "node:fs";
import { connect, createServer } from "node:net";
import { resolve } from "node:path";
import { spawnChild } from "./proc";

export interface PrivateSwtpm {
  /** --tpm spec for openTpm: swtpm:127.0.0.1:PORT */
  spec: string;
  stop(): Promise<void>;
}

const HOST = "127.0.0.1";

export async function startSwtpm(stateDir: string, timeoutMs = 8_000): Promise<PrivateSwtpm> {
  const dir = resolve(stateDir); // swtpm wants an absolute state path
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const deadline = Date.now() + timeoutMs;
  let lastError = "";
  // It needs port P (commands) and P+1 (control); another program may take P+1 meanwhile: a few tries.
  for (let attempt = 0; attempt < 5 && Date.now() < deadline; attempt++) {
    const port = await freePortPair();
    const proc = spawnChild(["swtpm", "socket", "--tpm2",
      "--server", `type=tcp,port=${port},bindaddr=${HOST}`, "--ctrl", `type=tcp,port=${port + 1},bindaddr=${HOST}`,
      "--flags", "startup-clear", "--tpmstate", `dir=${dir}`], { stdout: "ignore" });
    const stop = async () => {
      proc.kill("SIGTERM");
      await Promise.race([proc.exited, Bun.sleep(2000)]);
      if (proc.exitCode === null) { proc.kill("SIGKILL"); await proc.exited; }
    };
    const up = await Promise.race([waitListening(port, deadline), proc.exited.then(() => false)]);
    if (up) return { spec: `swtpm:${HOST}:${port}`, stop };
    await stop();
    lastError = (await new Response(proc.stderr).text()).trim().slice(-300) || `exit code ${proc.exitCode}`;
  }
  throw new Error(`swtpm did not start on a loopback port within ${timeoutMs / 1000} s: ${lastError || "no answer"}`);
}

/** An ephemeral port P whose neighbour P+1 was free too when checked. */
async function freePortPair(): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const p = await listenOnce(0);
    if (p < 65535 && (await listenOnce(p + 1).then(() => true, () => false))) return p;
  }
  throw new Error("no two adjacent free TCP ports on 127.0.0.1 for swtpm");
}

function listenOnce(port: number): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once("error", rej);
    srv.listen(port, HOST, () => {
      const addr = srv.address();
      const got = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => res(got));
    });
  });
}

async function waitListening(port: number, deadline: number): Promise<boolean> {
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((res) => {
      const s = connect({ host: HOST, port });
      s.once("connect", () => { s.destroy(); res(true); });
      s.once("error", () => res(false));
    });
    if (ok) return true;
    await Bun.sleep(50);
  }
  return false;
}
