// `airroot enroll`: the node-side client steps against a server, storing the credential in files (for testing and
// for hosts without a TPM): enroll, fetch config, get SSH host certificates, report the stage.
import { defineCommand } from "citty";
import { readFileSync, existsSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { establishTrust } from "../client/trust.ts";
import { credentialPaths, saveCredential, writePrivate } from "../client/credential.ts";
import { localMacs, smbiosUuid } from "../client/identity.ts";
import { normaliseMac } from "../server/schema.ts";
import { lastValue, repeated } from "./args.ts";

/** --tpm SPEC and --no-tpm refuse|warn, read from the raw arguments (see the "no-tpm" option). */
export function tpmOptions(rawArgs: string[]): { tpm?: string; noTpm: "refuse" | "warn" } {
  const tpm = lastValue(rawArgs, "tpm");
  const noTpm = lastValue(rawArgs, "no-tpm") ?? "refuse";
  if (tpm === "" || tpm?.startsWith("--")) throw new Error("enroll: --tpm needs a value: device, device:PATH or swtpm:HOST:PORT");
  if (noTpm !== "refuse" && noTpm !== "warn") throw new Error(`enroll: --no-tpm must be refuse or warn (got "${noTpm}"), e.g. --no-tpm warn`);
  return { tpm, noTpm };
}

export const enrollCommand = defineCommand({
  meta: {
    name: "enroll",
    description: "Enroll this host with an airroot server (the node must be armed), store key + certificate in --out, fetch its config and write SSH host certificates next to the given host keys.",
  },
  args: {
    server: { type: "string", description: "server base URL, e.g. https://10.0.2.2 (repeatable: tried in order; default: multicast discovery)" },
    ca: { type: "string", description: "site CA certificate (PEM) that the server's certificate must chain to", required: true },
    out: { type: "string", description: "directory for node.key (0600), node.crt, site-ca.crt and config.json (required without --tpm)" },
    mac: { type: "string", description: "MAC address to identify with (repeatable; default: this host's NICs)" },
    uuid: { type: "string", description: "SMBIOS UUID to identify with (default: /sys/class/dmi/id/product_uuid)" },
    name: { type: "string", description: "expected node name (refused if the MACs/UUID belong to another node)" },
    "host-key": { type: "string", description: "SSH host public key file to certify (repeatable); writes KEY-cert.pub beside it" },
    tpm: { type: "string", description: "keep the credential sealed in this TPM and prove enrollment with it: device, device:/dev/tpmrm0 or swtpm:HOST:PORT; a sealed credential the server still accepts is reused (no arming needed)" },
    // Read from rawArgs (tpmOptions): citty parses any `--no-X` as "X is false" and would lose the value and --tpm.
    "no-tpm": { type: "string", description: "with --tpm but no TPM present: refuse (default) or warn (enroll without TPM, loudly); `--no-tpm warn`" },
    lock: { type: "boolean", description: "with --tpm: afterwards extend the lock PCR so nothing later in this boot can unseal the credential" },
    "discovery-timeout": { type: "string", description: "seconds to wait for discovery replies (default 3)" },
  },
  async run({ args, rawArgs }) {
    const ca = readFileSync(resolve(args.ca), "utf8");
    const macs = (repeated(rawArgs, "mac").length ? repeated(rawArgs, "mac") : localMacs()).map(normaliseMac);
    const uuid = args.uuid?.toLowerCase() ?? smbiosUuid();
    if (macs.length === 0 && !uuid) throw new Error("enroll: no MAC address or UUID found; pass --mac or --uuid");
    const keyFiles = repeated(rawArgs, "host-key").map((f) => resolve(f.endsWith(".pub") ? f : `${f}.pub`));
    for (const k of keyFiles) if (!existsSync(k)) throw new Error(`enroll: host key ${k} does not exist`);
    const { tpm, noTpm } = tpmOptions(rawArgs);
    if (!args.out && !tpm) throw new Error("enroll: give --out DIR (credential in files) or --tpm SPEC (credential sealed in the TPM)");
    const r = await establishTrust({
      siteCa: ca, servers: repeated(rawArgs, "server"), macs, uuid, name: args.name,
      tpm, noTpm, lock: args.lock,
      hostKeys: keyFiles.map((k) => readFileSync(k, "utf8")),
      discoveryTimeoutMs: Number(args["discovery-timeout"] ?? 3) * 1000,
      log: (l) => console.error(l),
    });
    if (args.out) {
      const out = resolve(args.out);
      saveCredential(out, r.credential, ca);
      writePrivate(credentialPaths(out).config, JSON.stringify(r.config, null, 2) + "\n");
    }
    const how = r.origin === "sealed" ? `reused the credential sealed in the TPM: node ${r.credential.node} via` : `enrolled as ${r.credential.node}${r.sealedInTpm ? " (credential sealed in the TPM)" : ""} on`;
    console.log(`${how} ${r.server}, certificate serial ${r.credential.serial}, valid until ${r.credential.notAfter}${r.locked ? "; TPM credential locked for this boot" : ""}`);
    console.log(`config: profile ${r.config.profile}, image ${r.config.image?.digest ?? "(none yet)"}`);
    r.hostCertificates?.certificates.forEach((c, i) => {
      const target = keyFiles[i].replace(/\.pub$/, "-cert.pub");
      writeFileSync(target, c.certificate, { mode: 0o644 });
      console.log(`wrote ${target} (${c.type}, serial ${c.serial}, principals ${r.hostCertificates!.principals.join(",")})`);
    });
  },
});
