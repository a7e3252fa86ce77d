// Child script for units.test.ts: killChildren() flips process-wide state (no new children except cleanup), so it
// is exercised in a process of its own. Prints one JSON line with what happened.
import { killChildren, runAsync } from "../../src/selftest/proc";

const pending = runAsync(["sleep", "30"], { timeoutMs: 60_000 });
await Bun.sleep(50);
const t0 = Date.now();
await killChildren();
const killed = await pending;
const refused = await runAsync(["true"]);
const cleanup = await runAsync(["true"], { cleanup: true });
console.log(JSON.stringify({ killMs: Date.now() - t0, killedCode: killed.code, refused, cleanupCode: cleanup.code }));
