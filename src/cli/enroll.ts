// `airroot enroll`: the node-side client steps against a server, storing the credential in files (for testing and
// for hosts without a TPM): enroll, fetch config, get SSH host certificates, report the stage.
import { defineCommand } from "citty";
import { readFileSync, existsSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { enrollNode, NodeApi } from "../client/api.ts";
import { credentialPaths, saveCredential, writePrivate } from "../client/credential.ts";
import { localMacs, smbiosUuid } from "../client/identity.ts";
import { discover } from "../client/discover.ts";
import { tpmProver } from "../client/tpmprover.ts";
import { normaliseMac } from "../server/schema.ts";
import { repeated } from "./node.ts";

export const enrollCommand = defineCommand({
  meta: {
    name: "enroll",
    description: "Enroll this host with an airroot server (the node must be armed), store key + certificate in --out,\n" +
      "  fetch its config and write SSH host certificates next to the given host keys.",
  },
  args: {
    server: { type: "string", description: "server base URL, e.g. https://10.0.2.2 (default: find one by multicast discovery)" },
    ca: { type: "string", description: "site CA certificate (PEM) that the server's certificate must chain to", required: true },
    out: { type: "string", description: "directory for node.key (0600), node.crt, site-ca.crt and config.json", required: true },
    mac: { type: "string", description: "MAC address to identify with (repeatable; default: this host's NICs)" },
    uuid: { type: "string", description: "SMBIOS UUID to identify with (default: /sys/class/dmi/id/product_uuid)" },
    name: { type: "string", description: "expected node name (refused if the MACs/UUID belong to another node)" },
    "host-key": { type: "string", description: "SSH host public key file to certify (repeatable); writes KEY-cert.pub beside it" },
    tpm: { type: "string", description: "prove enrollment with a TPM: device, device:/dev/tpmrm0 or swtpm:HOST:PORT (default: no TPM)" },
    "discovery-timeout": { type: "string", description: "seconds to wait for discovery replies (default 3)" },
  },
  async run({ args, rawArgs }) {
    const ca = readFileSync(resolve(args.ca), "utf8");
    const macs = (repeated(rawArgs, "mac").length ? repeated(rawArgs, "mac") : localMacs()).map(normaliseMac);
    const uuid = args.uuid?.toLowerCase() ?? smbiosUuid();
    if (macs.length === 0 && !uuid) throw new Error("enroll: no MAC address or UUID found; pass --mac or --uuid");
    let server = args.server;
    if (!server) {
      const found = await discover({ macs, uuid, timeoutMs: Number(args["discovery-timeout"] ?? 3) * 1000, enough: 1 });
      if (found.length === 0) throw new Error("enroll: no server answered discovery; pass --server URL (is the node added on the server?)");
      server = found[0].api[0];
      console.error(`discovered ${server} (server ${found[0].serverId})`);
    }
    const cred = await enrollNode(server, ca, { macs, uuid, name: args.name }, args.tpm ? await tpmProver(args.tpm) : undefined);
    const out = resolve(args.out);
    saveCredential(out, cred, ca);
    console.log(`enrolled as ${cred.node}, certificate serial ${cred.serial}, valid until ${cred.notAfter}`);
    const api = new NodeApi(server, ca, cred);
    try {
      const config = await api.config();
      writePrivate(credentialPaths(out).config, JSON.stringify(config, null, 2) + "\n");
      console.log(`config: profile ${config.profile}, image ${config.image?.digest ?? "(none yet)"}`);
      const keys = repeated(rawArgs, "host-key").map((f) => resolve(f.endsWith(".pub") ? f : `${f}.pub`));
      for (const k of keys) if (!existsSync(k)) throw new Error(`enroll: host key ${k} does not exist`);
      if (keys.length) {
        const r = await api.sshCertificates(keys.map((k) => readFileSync(k, "utf8")));
        r.certificates.forEach((c, i) => {
          const target = keys[i].replace(/\.pub$/, "-cert.pub");
          writeFileSync(target, c.certificate, { mode: 0o644 });
          console.log(`wrote ${target} (${c.type}, serial ${c.serial}, principals ${r.principals.join(",")})`);
        });
      }
      await api.status("enrolled", `airroot enroll on ${macs[0] ?? uuid}`);
    } finally { await api.close(); }
  },
});
