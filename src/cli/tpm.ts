// `airroot tpm ...`: debugging commands over src/tpm (info, pcrread, seal, unseal, lock, evict, identity, activate).
import { defineCommand } from "citty";
import { readFileSync, writeFileSync } from "node:fs";
import { HASHES, hashByName } from "../tpm/constants";
import { activateCredential, readIdentity } from "../tpm/attest";
import { evictCredential, findCredential, lockCredential, sealCredential, unsealCredential, type CredentialOptions } from "../tpm/credential";
import { fromToolsCredentialFile, makeCredential, toToolsCredentialFile } from "../tpm/makecredential";
import { Writer, fromHex, hex } from "../tpm/marshal";
import { hashName, publicFromBytes } from "../tpm/structures";
import { type Tpm, tpmInfo, withTpm } from "../tpm/tpm";

const common = {
  tpm: { type: "string", description: "TPM to use: device (= /dev/tpmrm0, then /dev/tpm0), device:PATH, or swtpm:HOST:PORT", default: "device" },
  timeout: { type: "string", description: "seconds one TPM command may take before giving up", default: "60" },
} as const;
const pcrArgs = {
  pcr: { type: "string", description: "PCR the credential is sealed to and locked by", default: "15" },
  bank: { type: "string", description: "PCR bank: sha1, sha256, sha384, sha512 (default: strongest allocated)" },
} as const;

type Common = { tpm: string; timeout: string };
const run = <T>(args: Common, fn: (tpm: Tpm) => Promise<T>): Promise<T> => {
  const s = Number(args.timeout);
  if (!(s > 0 && s <= 3600)) throw new Error(`tpm: --timeout "${args.timeout}" is not a number of seconds in 1..3600`);
  return withTpm(args.tpm, fn, { timeoutMs: s * 1000 });
};

function bankOf(name: string | undefined): number | undefined {
  if (name === undefined) return undefined;
  const b = hashByName(name);
  if (b === undefined) throw new Error(`tpm: --bank "${name}" is not one of ${Object.values(HASHES).map((h) => h.name).join(", ")}`);
  return b;
}

function credOpts(args: { pcr: string; bank?: string }): CredentialOptions {
  const pcr = Number(args.pcr);
  if (!Number.isInteger(pcr) || pcr < 0 || pcr > 23) throw new Error(`tpm: --pcr "${args.pcr}" is not a PCR index 0..23`);
  return { pcr, bank: bankOf(args.bank) };
}

const h32 = (n: number) => `0x${n.toString(16).padStart(8, "0")}`;

const info = defineCommand({
  meta: { name: "info", description: "Describe the TPM (maker, firmware, PCR banks, persistent handles) and any sealed airroot credential" },
  args: { ...common, json: { type: "boolean", description: "print JSON instead of text" } },
  run: ({ args }) => run(args, async (tpm) => {
    const i = await tpmInfo(tpm);
    const cred = await findCredential(tpm);
    if (args.json) { console.log(JSON.stringify({ ...i, credential: cred ?? null }, null, 2)); return; }
    console.log(`transport       ${i.transport}`);
    console.log(`manufacturer    ${i.manufacturer} (${i.vendor}), firmware ${i.firmware}, TPM ${i.specRevision}`);
    console.log(`PCR banks       ${i.pcrBanks.map((b) => `${b.hash}(${b.pcrs})`).join(" ")}`);
    console.log(`persistent      ${i.persistentHandles.map(h32).join(" ") || "-"}`);
    console.log(`NV indices      ${i.nvIndices.map(h32).join(" ") || "-"}`);
    console.log(cred
      ? `credential      sealed at ${h32(cred.objectHandle)} to PCR ${cred.pcr}${cred.boundPcrs.length ? ` + ${cred.boundPcrs.join(",")}` : ""} (${hashName(cred.bank)}), ${cred.length} bytes in NV ${cred.nvIndices.map(h32).join(" ")}`
      : "credential      none");
  }),
});

const pcrread = defineCommand({
  meta: { name: "pcrread", description: "Print PCR values, e.g. `airroot tpm pcrread --pcrs 0,7,15 --bank sha256`" },
  args: {
    ...common,
    pcrs: { type: "string", description: "comma-separated PCR indices", default: "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23" },
    bank: { type: "string", description: "bank to read (default: every allocated bank)" },
  },
  run: ({ args }) => run(args, async (tpm) => {
    const pcrs = args.pcrs.split(",").map((s) => Number(s.trim()));
    if (pcrs.some((p) => !Number.isInteger(p) || p < 0 || p > 23)) throw new Error(`tpm pcrread: --pcrs "${args.pcrs}" must list PCR indices 0..23`);
    const wanted = bankOf(args.bank);
    const banks = (await tpm.getPcrBanks()).filter((b) => b.pcrs.length && (wanted === undefined || b.hash === wanted));
    for (const b of banks) {
      console.log(`${hashName(b.hash)}:`);
      // PCR_Read returns at most 8 digests per call: read one PCR at a time to keep it simple.
      for (const p of pcrs.filter((x) => b.pcrs.includes(x))) {
        const { values } = await tpm.pcrRead([{ hash: b.hash, pcrs: [p] }]);
        console.log(`  ${String(p).padStart(2)}: 0x${hex(values[0] ?? new Uint8Array(0)).toUpperCase()}`);
      }
    }
  }),
});

const seal = defineCommand({
  meta: { name: "seal", description: "Seal FILE (up to 16 KiB) to the current value of a PCR and persist it in the TPM (replaces an older one)" },
  args: {
    ...common, ...pcrArgs,
    "bind-pcrs": { type: "string", description: "also bind to the current values of these PCRs, e.g. 4,7,9 (kernel, Secure Boot, initrd); updates then need re-enrollment" },
    in: { type: "positional", description: "file with the credential bytes", required: true },
  },
  run: ({ args }) => run(args, async (tpm) => {
    const data = new Uint8Array(readFileSync(args.in));
    const bind = args["bind-pcrs"] ? args["bind-pcrs"].split(",").map((x) => Number(x.trim())) : [];
    if (bind.some((p) => !Number.isInteger(p))) throw new Error(`tpm seal: --bind-pcrs "${args["bind-pcrs"]}" must list PCR indices`);
    const r = await sealCredential(tpm, data, { ...credOpts(args), bindPcrs: bind });
    const bound = r.boundPcrs.length ? ` + bound PCRs ${r.boundPcrs.join(",")}` : "";
    console.log(`sealed ${r.length} bytes: object ${h32(r.objectHandle)}, PCR ${r.pcr}${bound} (${hashName(r.bank)}), NV ${r.nvIndices.map(h32).join(" ")}`);
  }),
});

const unseal = defineCommand({
  meta: { name: "unseal", description: "Unseal the airroot credential into FILE (fails once `lock` ran this boot)" },
  args: { ...common, out: { type: "positional", description: "file to write the credential to (mode 0600)", required: true } },
  run: ({ args }) => run(args, async (tpm) => {
    const data = await unsealCredential(tpm);
    writeFileSync(args.out, data, { mode: 0o600 });
    console.error(`unsealed ${data.length} bytes into ${args.out}`);
  }),
});

const lock = defineCommand({
  meta: { name: "lock", description: "Extend the PCR with the airroot lock event: nothing later in this boot can unseal the credential" },
  args: { ...common, pcr: pcrArgs.pcr },
  run: ({ args }) => run(args, async (tpm) => {
    const banks = await lockCredential(tpm, credOpts({ pcr: args.pcr }));
    console.log(`locked: PCR ${args.pcr} extended in ${banks.map(hashName).join(", ")}`);
  }),
});

const evict = defineCommand({
  meta: { name: "evict", description: "Remove the sealed airroot credential (persistent object and NV indices) from the TPM" },
  args: { ...common },
  run: ({ args }) => run(args, async (tpm) => {
    console.log(`removed ${await evictCredential(tpm)} sealed credential(s)`);
  }),
});

const ekAlgArg = { "ek-alg": { type: "string", description: "endorsement key algorithm: ecc or rsa", default: "ecc" } } as const;
const ekAlgOf = (s: string) => {
  if (s !== "ecc" && s !== "rsa") throw new Error(`tpm: --ek-alg "${s}" must be ecc or rsa`);
  return s;
};

const identity = defineCommand({
  meta: { name: "identity", description: "Print what enrollment sends: EK public (TPM2B_PUBLIC, base64), EK certificate presence, AK name" },
  args: { ...common, ...ekAlgArg, "ek-pub-out": { type: "string", description: "also write the EK public as a TPM2B_PUBLIC file (tpm2-tools .pub format)" } },
  run: ({ args }) => run(args, async (tpm) => {
    const id = await readIdentity(tpm, { ekAlg: ekAlgOf(args["ek-alg"]) });
    const ekPub = new Writer().tpm2b(id.ekPublic.raw).finish();
    if (args["ek-pub-out"]) writeFileSync(args["ek-pub-out"], ekPub);
    console.log(`ek-public   ${Buffer.from(ekPub).toString("base64")}`);
    console.log(`ek-cert     ${id.ekCertificate ? `${id.ekCertificate.length} bytes (DER) in NV` : "none"}`);
    console.log(`ak-name     ${hex(id.akName)}`);
  }),
});

const activate = defineCommand({
  meta: { name: "activate", description: "ActivateCredential on a tpm2-tools credential blob (made for this TPM's EK and AK name); writes the secret" },
  args: {
    ...common, ...ekAlgArg,
    blob: { type: "positional", description: "credential file (tpm2_makecredential -o format)", required: true },
    out: { type: "positional", description: "file to write the recovered secret to", required: true },
  },
  run: ({ args }) => run(args, async (tpm) => {
    const blob = fromToolsCredentialFile(new Uint8Array(readFileSync(args.blob)));
    const secret = await activateCredential(tpm, blob.credentialBlob, blob.secret, { ekAlg: ekAlgOf(args["ek-alg"]) });
    writeFileSync(args.out, secret, { mode: 0o600 });
    console.error(`activated: ${secret.length}-byte secret written to ${args.out}`);
  }),
});

const makecredential = defineCommand({
  meta: { name: "makecredential", description: "Server side, no TPM needed: encrypt SECRET to an EK public (TPM2B_PUBLIC file) for an object NAME" },
  args: {
    "ek-pub": { type: "string", description: "EK public area file (TPM2B_PUBLIC, e.g. from `identity --ek-pub-out`)", required: true },
    name: { type: "string", description: "hex name of the object to bind to (the AK name)", required: true },
    secret: { type: "string", description: "file with the secret (at most 32 bytes for a SHA-256 EK)", required: true },
    out: { type: "string", description: "credential file to write (tpm2-tools format)", required: true },
  },
  run: ({ args }) => {
    const ek = publicFromBytes(new Uint8Array(readFileSync(args["ek-pub"])));
    const made = makeCredential(ek, fromHex(args.name), new Uint8Array(readFileSync(args.secret)));
    writeFileSync(args.out, toToolsCredentialFile(made));
    console.error(`credential for ${args.name.slice(0, 12)}... written to ${args.out}`);
  },
});

export const tpmCommand = defineCommand({
  meta: { name: "tpm", description: "TPM 2.0 debugging: inspect the TPM, seal/unseal/lock/evict the node credential, EK identity and activation" },
  subCommands: { info, pcrread, seal, unseal, lock, evict, identity, activate, makecredential },
});
