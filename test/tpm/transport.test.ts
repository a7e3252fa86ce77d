// Transports: --tpm parsing, "no TPM" messages, a silent or misbehaving TPM never hangs us, PCR extend vs tpm2_pcrread.
import { afterAll, expect, test } from "bun:test";
import { createServer, type Server, type Socket } from "node:net";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { freePort } from "../helpers/ports";
import { startSwtpm } from "../helpers/swtpm";
import { TpmTransportError, openTransport, parseTpmSpec } from "../../src/tpm/transport";
import { TpmFormatError, hex } from "../../src/tpm/marshal";
import { Tpm } from "../../src/tpm/commands";
import { openTpm, openTpmOrWarn, tpmInfo } from "../../src/tpm/tpm";
import { TPM_ALG } from "../../src/tpm/constants";

afterAll(removeScratchDirs);

test("--tpm spec parsing", () => {
  expect(parseTpmSpec("device")).toEqual({ kind: "device", paths: ["/dev/tpmrm0", "/dev/tpm0"] });
  expect(parseTpmSpec("device:/dev/tpm0")).toEqual({ kind: "device", paths: ["/dev/tpm0"] });
  expect(parseTpmSpec("swtpm:127.0.0.1:2321")).toEqual({ kind: "swtpm", host: "127.0.0.1", port: 2321 });
  expect(parseTpmSpec("swtpm:[::1]:2321")).toEqual({ kind: "swtpm", host: "::1", port: 2321 });
  for (const bad of ["device:tpm0", "swtpm:host", "swtpm:1.2.3.4:99999", "mssim:x:1", "tpm"]) {
    expect(() => parseTpmSpec(bad)).toThrow(TpmTransportError);
  }
});

test("no TPM: a missing device and a closed swtpm port give clear 'no TPM' errors", async () => {
  const e1 = await openTransport("device:/nonexistent/tpmrm0").catch((e) => e);
  expect(e1).toBeInstanceOf(TpmTransportError);
  expect(String(e1)).toMatch(/no TPM: could not open \/nonexistent\/tpmrm0: does not exist/);
  const port = await freePort();
  const e2 = await openTpm(`swtpm:127.0.0.1:${port}`).catch((e) => e);
  expect(e2).toBeInstanceOf(TpmTransportError);
  expect(String(e2)).toMatch(/no TPM: cannot connect to swtpm:127.0.0.1:\d+/);
});

/** A fake TPM on loopback whose replies we script: real TPMs cannot be made to misbehave on demand. */
async function fakeTpm(onCommand: (sock: Socket, cmd: Buffer) => void): Promise<{ server: Server; port: number }> {
  const port = await freePort();
  const server = createServer((sock) => { sock.on("data", (d: Buffer) => onCommand(sock, d)); sock.on("error", () => undefined); });
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  return { server, port };
}

const OK_GETRANDOM = Buffer.from("80010000001000000000000401020304", "hex"); // tag, size 16, rc 0, TPM2B of 4 bytes

test("a silent TPM times out instead of hanging; the transport then refuses further use", async () => {
  const { server, port } = await fakeTpm(() => undefined);
  try {
    const t = await openTransport(`swtpm:127.0.0.1:${port}`, { timeoutMs: 300 });
    const t0 = Date.now();
    const e = await new Tpm(t).getRandom(4).catch((x) => x);
    expect(e).toBeInstanceOf(TpmTransportError);
    expect(String(e)).toMatch(/no response within 300 ms/);
    expect(Date.now() - t0).toBeLessThan(3000);
    await expect(new Tpm(t).getRandom(4)).rejects.toBeInstanceOf(TpmTransportError);
    await t.close();
  } finally { server.close(); }
});

test("responses split into tiny pieces are reassembled; bad sizes and hang-ups are clean errors", async () => {
  let mode = "drip";
  const { server, port } = await fakeTpm((sock) => {
    if (mode === "drip") {
      let i = 0;
      const timer = setInterval(() => { if (i >= OK_GETRANDOM.length) { clearInterval(timer); return; } sock.write(OK_GETRANDOM.subarray(i, i + 3)); i += 3; }, 2);
    } else if (mode === "tiny-size") {
      sock.write(Buffer.from("80010000000500000000", "hex"));
    } else if (mode === "huge-size") {
      sock.write(Buffer.from("8001ffffffff00000000", "hex"));
    } else if (mode === "hangup") {
      sock.write(OK_GETRANDOM.subarray(0, 12)); sock.end();
    }
  });
  try {
    const open = () => openTransport(`swtpm:127.0.0.1:${port}`, { timeoutMs: 2000 });
    let t = await open();
    expect(hex(await new Tpm(t).getRandom(4))).toBe("01020304");
    await t.close();
    for (const [m, type, text] of [["tiny-size", TpmFormatError, /declares size 5/], ["huge-size", TpmFormatError, /declares size 4294967295/],
      ["hangup", TpmTransportError, /connection closed/]] as const) {
      mode = m;
      t = await open();
      const e = await new Tpm(t).getRandom(4).catch((x) => x);
      expect(e).toBeInstanceOf(type);
      expect(String(e)).toMatch(text);
      await t.close();
    }
  } finally { server.close(); }
});

test("PCR values after our extend equal tpm2_pcrread; tpmInfo describes swtpm", async () => {
  const dir = scratchDir();
  const sw = await startSwtpm(join(dir, "tpm"));
  try {
    const tpm = await openTpm(sw.spec);
    const digests = [
      { hash: TPM_ALG.SHA1, digest: new Uint8Array(20).fill(0x11) },
      { hash: TPM_ALG.SHA256, digest: new Uint8Array(32).fill(0x22) },
    ];
    await tpm.pcrExtend(16, digests);
    await tpm.pcrExtend(16, [{ hash: TPM_ALG.SHA256, digest: new Uint8Array(32).fill(0x33) }]);
    const ours = await tpm.pcrRead([{ hash: TPM_ALG.SHA1, pcrs: [16] }, { hash: TPM_ALG.SHA256, pcrs: [16] }]);
    const info = await tpmInfo(tpm);
    expect(info.manufacturer).toBe("IBM");
    expect(info.pcrBanks.map((b) => b.hash)).toContain("sha256");
    await tpm.close(); // swtpm serves one client at a time
    sw.tools(["tpm2_pcrread", "sha1:16+sha256:16", "-o", "pcrs.bin"], { cwd: dir });
    const theirs = readFileSync(join(dir, "pcrs.bin"));
    expect(hex(theirs)).toBe(hex(Buffer.concat(ours.values)));
    expect(hex(ours.values[0])).not.toBe("00".repeat(20));
  } finally { await sw.stop(); }
}, 60_000);

test("no-TPM policy: refuse throws the clear error; warn logs loudly and returns undefined", async () => {
  const spec = "device:/nonexistent/tpmrm0";
  await expect(openTpmOrWarn(spec)).rejects.toThrow(/no TPM/);
  const lines: string[] = [];
  expect(await openTpmOrWarn(spec, { noTpm: "warn", log: (l) => lines.push(l) })).toBeUndefined();
  expect(lines.join("\n")).toMatch(/WARNING: continuing WITHOUT a TPM/);
});
