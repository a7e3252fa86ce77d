// `airroot serve config show|set|add|remove`: read and change config.json without editing it by hand; a running
// `airroot serve` picks changes up by itself (settings marked "restart" wait for the next start).
import { defineCommand } from "citty";
import { resolve } from "node:path";
import { CONFIG_CHECK_MS, CONFIG_KEYS, configKey, editConfig, keyNames, valueOf, type Verb } from "../server/configedit.ts";
import { readConfig } from "../server/state.ts";
import { advertisedUrls } from "../server/urls.ts";
import { imageSourcePlan } from "../server/imagesources.ts";

const stateArg = { type: "string", description: "server state directory (made by `airroot serve init`)", required: true } as const;
const keyList = () => CONFIG_KEYS.map((k) => `${k.key}${k.kind === "list" ? " (list)" : ""}`).join(", ");

function show(stateDir: string, name: string | undefined, json: boolean): void {
  const c = readConfig(stateDir);
  if (name) {
    const k = configKey(name);
    const v = valueOf(c, k);
    if (json) console.log(JSON.stringify((c as Record<string, unknown>)[k.field] ?? null));
    else if (Array.isArray(v)) { for (const x of v) console.log(x); }
    else if (v !== "") console.log(String(v));
    return;
  }
  if (json) { console.log(JSON.stringify(c, null, 2)); return; }
  const w = Math.max(...CONFIG_KEYS.map((k) => k.key.length)) + 2;
  for (const k of CONFIG_KEYS) {
    const v = valueOf(c, k);
    const lines = Array.isArray(v) ? (v.length ? v : ["-"]) : [v === "" ? "-" : String(v)];
    lines.forEach((l, i) => console.log(`${(i === 0 ? `${k.key}:` : "").padEnd(w)}${l}`));
  }
  console.log(`${"server-id:".padEnd(w)}${c.serverId}`);
  console.log(`nodes are told: ${advertisedUrls(c).join(" ") || "(nothing: set addresses or advertise)"}${c.advertise.length ? "" : " (from addresses and port)"}`);
  const plan = imageSourcePlan(advertisedUrls(c), c);
  console.log(`image sources (mirror-order ${plan.order}): ${plan.bases.map((b, i) => plan.order === "spread"
    ? `${b} weight ${plan.weights[i]}${plan.weights[i] === 0 ? " (last resort)" : ""}` : b).join(", ") || "(none)"}`);
}

function edit(verb: Verb, stateDir: string, name: string, values: string[], weight?: string): void {
  const r = editConfig(stateDir, verb, name, values, { weight });
  for (const n of r.notes) console.error(`note: ${n}`);
  for (const w of r.warnings) console.error(`warning: ${w}`);
  const v = valueOf(r.config, r.key);
  const shown = Array.isArray(v) ? (v.length ? v.join(" ") : "(empty)") : v === "" ? "(unset)" : String(v);
  console.log(`${r.key.key}: ${shown}${r.written ? "" : " (unchanged)"}`);
  if (!r.written) return;
  console.log(r.key.live
    ? `a running airroot serve picks this up within ${CONFIG_CHECK_MS / 1000} s (at once on SIGHUP)`
    : `${r.key.key} takes effect when airroot serve restarts (a running server keeps the old value)`);
}

const editCommand = (verb: Verb, description: string) => defineCommand({
  meta: { name: verb, description },
  args: {
    key: { type: "positional", description: `one of: ${keyList()}`, required: true },
    values: { type: "positional", description: "VALUE... (quote a key line: \"ssh-ed25519 AAAA... me@host\"; root-keys also takes .pub files)", required: false },
    state: stateArg,
    weight: { type: "string", description: "add mirrors|peers URL... --weight W: their weight for mirror-order spread (mirror-weights URL=W, in the same write)" },
  },
  run({ args }) {
    edit(verb, resolve(args.state), args.key, (args._ as string[]).slice(1), args.weight);
    if (verb === "add" && args.weight !== undefined) {
      console.log(`mirror-weights: ${readConfig(resolve(args.state)).mirrorWeights.join(" ") || "(empty)"}`);
    }
  },
});

export const configCommand = defineCommand({
  meta: {
    name: "config",
    description: `Show or change config.json (${keyNames().join(", ")}); a running airroot serve re-reads it by itself`,
  },
  subCommands: {
    show: defineCommand({
      meta: { name: "show", description: "Print the settings, or one KEY's value (lists one item per line)" },
      args: {
        key: { type: "positional", description: `one of: ${keyNames().join(", ")}`, required: false },
        json: { type: "boolean", description: "print JSON (without KEY: the whole config.json)" },
        state: stateArg,
      },
      run({ args }) { show(resolve(args.state), args.key, Boolean(args.json)); },
    }),
    set: editCommand("set", "Replace KEY's value: one VALUE for a single setting, any number for a list (none empties it)"),
    add: editCommand("add", "Add VALUEs to a list KEY (values already present are kept once)"),
    remove: editCommand("remove", "Remove VALUEs from a list KEY (root-keys: by key line, .pub file or comment)"),
  },
});
