// A program run on a booted node (through the bundled Bun: `BUN_BE_BUN=1 airroot FILE KEYHEX`) that looks for a key
// where root on that node could find it: every other process's writable memory (/proc/PID/mem) and /proc/keys. It
// skips itself and its ancestors (the ssh session and shell that carry the key in their command line). Exit 0: not
// found anywhere.
export const KEY_SCAN_JS = `
const fs = require("fs");
const hex = process.argv[process.argv.length - 1];
const raw = Buffer.from(hex, "hex"), text = Buffer.from(hex);
const skip = new Set();
for (let p = process.pid; p > 1; ) { skip.add(p); p = Number(fs.readFileSync("/proc/" + p + "/stat", "utf8").replace(/^.*\\) /, "").split(" ")[1]); }
const hits = [];
for (const pid of fs.readdirSync("/proc").filter((d) => /^\\d+$/.test(d)).map(Number)) {
  if (skip.has(pid)) continue;
  let maps = "", fd = -1, comm = "?";
  try { comm = fs.readFileSync("/proc/" + pid + "/comm", "utf8").trim(); maps = fs.readFileSync("/proc/" + pid + "/maps", "utf8"); fd = fs.openSync("/proc/" + pid + "/mem", "r"); } catch { continue; }
  for (const l of maps.split("\\n")) {
    // Writable mappings only: a key a process received lives in its heap, stack or other writable memory; its
    // read-only mappings are its program files (the 114 MiB airroot binary, three times), scanned in vain.
    const m = /^([0-9a-f]+)-([0-9a-f]+) rw/.exec(l);
    if (!m || /\\[(vvar|vsyscall|vvar_vclock)\\]/.test(l)) continue;
    const start = parseInt(m[1], 16), end = parseInt(m[2], 16);
    for (let at = start; at < end; at += 1 << 24) {
      const buf = Buffer.alloc(Math.min(1 << 24, end - at) + 128);
      let n = 0;
      try { n = fs.readSync(fd, buf, 0, buf.length - 128, at); } catch { break; }
      const b = buf.subarray(0, n);
      if (b.indexOf(raw) >= 0 || b.indexOf(text) >= 0) { hits.push(pid + " " + comm + " " + l.trim()); break; }
    }
  }
  fs.closeSync(fd);
}
if (fs.readFileSync("/proc/keys", "utf8").includes("airroot:")) hits.push("/proc/keys lists an airroot key");
console.log(hits.length ? "KEY FOUND:\\n" + hits.join("\\n") : "key not found in any other process's memory or in /proc/keys");
process.exit(hits.length ? 1 : 0);
`;
