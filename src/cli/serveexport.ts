// `airroot serve export`: the site bundle (server/sitebundle.ts) in one 0600 file, for `airroot serve init --join`
// on the next deployment server of the site.
import { defineCommand } from "citty";
import { resolve } from "node:path";
import { collectBundle } from "../server/sitebundle.ts";
import { writeNew } from "../server/state.ts";
import { stateArg } from "./args.ts";

export const exportCommand = defineCommand({
  meta: {
    name: "export",
    description: "Write the site bundle another deployment server joins with (`airroot serve init --join FILE`): the site CA, node CA, SSH CA, image key and encrypted images' keys, the database password and config.json's site settings, in one file (0600). Not this server's identity, records or images.",
  },
  args: {
    state: stateArg,
    out: { type: "string", description: "the bundle file to write (0600; refused if it exists). It holds the site's private keys: copy it over ssh or on removable media, and delete it once joined", required: true },
  },
  run({ args }) {
    const out = resolve(args.out);
    const b = collectBundle(resolve(args.state));
    if (!writeNew(out, JSON.stringify(b, null, 1) + "\n", 0o600)) throw new Error(`serve export: ${out} already exists; give a new --out (or remove the old bundle)`);
    const imageKeys = b.files.filter((f) => f.name.startsWith("image-keys/")).length;
    console.log(`wrote ${out} (0600): the site CA, node CA, SSH CA and image key, ${imageKeys} encrypted image key(s)` +
      `${b.dbPassword ? ", the database password" : ""} and the site settings`);
    console.log(`on the new server: airroot serve init --state DIR --join ${out} --address ADDRESS; then delete the bundle`);
  },
});
