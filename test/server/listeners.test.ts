// What `airroot serve` binds: with a specific --listen and --no-discovery, exactly that TCP address and no UDP
// socket; and a guard over the test sources so no test starts a server on wildcard addresses or with discovery on
// (outside a network namespace it made).
import { afterAll, expect, test } from "bun:test";
import { join, relative } from "node:path";
import { readFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { privateAirroot, REPO } from "../helpers/boot";
import { socketsOf } from "../helpers/sockets";

afterAll(removeScratchDirs);

/** Runs the command in a fresh network namespace when we may (root): a regression then binds nothing outside. */
function isolated(cmd: string[]): string[] {
  const ok = Bun.spawnSync(["unshare", "-n", "true"], { stdout: "ignore", stderr: "ignore" }).exitCode === 0;
  return ok ? ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", ...cmd] : cmd;
}

async function readUntil(stream: ReadableStream<Uint8Array>, re: RegExp, timeoutMs: number): Promise<string> {
  const reader = stream.getReader();
  let text = "";
  const deadline = Date.now() + timeoutMs;
  try {
    while (!re.test(text)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${re} in: ${text}`);
      const r = await Promise.race([reader.read(), Bun.sleep(left).then(() => ({ done: true, value: undefined }))]);
      if (r.done) break;
      text += new TextDecoder().decode(r.value);
    }
  } finally { reader.releaseLock(); }
  return text;
}

test("`airroot serve --listen 127.0.0.1:0 --no-discovery` binds that TCP address only and no UDP socket", async () => {
  const airroot = privateAirroot();
  const state = join(scratchDir(), "state");
  const init = Bun.spawnSync([airroot, "serve", "init", "--state", state, "--address", "192.0.2.10"], { stdout: "pipe", stderr: "pipe" });
  expect(init.exitCode).toBe(0);
  const p = Bun.spawn(isolated([airroot, "serve", "--state", state, "--listen", "127.0.0.1:0", "--no-discovery"]), { stdout: "pipe", stderr: "pipe" });
  try {
    const out = await readUntil(p.stdout, /listening on 127\.0\.0\.1:\d+/, 30_000);
    expect(out).toMatch(/listening on 127\.0\.0\.1:\d+/);
    const socks = socketsOf(p.pid);
    expect(socks.filter((s) => s.proto.startsWith("udp"))).toEqual([]);
    const listeners = socks.filter((s) => s.listening);
    expect(listeners.map((s) => s.address)).toEqual(["127.0.0.1"]);
  } finally {
    p.kill("SIGTERM");
    await p.exited;
  }
}, 120_000);

// Starting a server: `serve({ ... })` in-process, or the CLI as [..., "serve", "--...", ...].
const STARTS = [/(?<![.\w])serve\(\{/g, /["'`]serve["'`]\s*,\s*["'`]--/g];
// A server inside a network namespace the test made may bind what it likes there: the starting line says so
// (ip netns exec, a NetnsPair's spawn, unshare), or the file's opening comment does (a child run under unshare).
const IN_NETNS = /netns|net\.spawn\(|unshare/;
const NETNS_FILE = /unshare|network namespace/i;

/** The call or array literal around a match: up to the closing bracket of what encloses it, or the statement end. */
function callText(src: string, at: number): string {
  let depth = 0;
  for (let i = at; i < src.length; i++) {
    const c = src[i];
    if ("([{".includes(c)) depth++;
    else if (")]}".includes(c)) { if (--depth < 0) return src.slice(at, i); }
    else if (depth === 0 && (c === ";" || c === "\n")) return src.slice(at, i);
  }
  return src.slice(at);
}

test("no test starts a server on a wildcard address or with discovery on (outside a namespace it made)", () => {
  const self = relative(REPO, import.meta.path);
  const problems: string[] = [];
  let seen = 0;
  for (const dir of ["test", "bench"]) {
    for (const f of new Bun.Glob("**/*.ts").scanSync({ cwd: join(REPO, dir) })) {
      const file = join(dir, f);
      if (file === self) continue;
      const src = readFileSync(join(REPO, file), "utf8");
      const opening = src.split("\n").slice(0, 10).filter((l) => /^\s*\/\//.test(l)).join("\n");
      for (const re of STARTS) {
        for (const m of src.matchAll(re)) {
          const text = callText(src, m.index!);
          const lineStart = src.lastIndexOf("\n", m.index!) + 1;
          const line = src.slice(lineStart, src.indexOf("\n", m.index!));
          const where = `${file}:${src.slice(0, m.index!).split("\n").length}`;
          if (/^\s*(\/\/|\*)/.test(line)) continue; // a comment
          seen++;
          if (IN_NETNS.test(line) || NETNS_FILE.test(opening)) continue;
          if (!/--no-discovery|discovery: false/.test(text)) problems.push(`${where}: discovery not disabled: ${text.trim()}`);
          if (!/--listen|listen:/.test(text)) problems.push(`${where}: no --listen (the default is every address): ${text.trim()}`);
          if (/0\.0\.0\.0|\[::\]|"::"/.test(text)) problems.push(`${where}: wildcard listen address: ${text.trim()}`);
        }
      }
    }
  }
  expect(seen).toBeGreaterThan(8); // the patterns still find the servers the suite starts
  expect(problems).toEqual([]);
});
