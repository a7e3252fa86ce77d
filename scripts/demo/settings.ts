// The demo's value for every setting of the README's walk-through: paths under .cache/demo, free loopback ports.
import { join } from "node:path";
import { freePort } from "../../test/helpers/ports";
import { settingNames, usedNames, type WalkthroughLine } from "./readme";

export const DEMO_SETTINGS = ["STATE", "ROOT", "SITE", "ADMIN_KEY", "LISTEN", "MIRROR_IMAGES", "MIRROR_TLS", "MIRROR_LISTEN", "NGINX_CONF"] as const;

/** Problems with the README's settings as the demo sees them (empty when every name is covered both ways). */
export function settingsProblems(w: WalkthroughLine[]): string[] {
  const names = settingNames(w), known: readonly string[] = DEMO_SETTINGS;
  const problems: string[] = [];
  const unknown = names.filter((n) => !known.includes(n));
  if (unknown.length) problems.push(`README.md sets ${unknown.join(", ")}, which scripts/demo/settings.ts gives no value: add it there`);
  const missing = known.filter((n) => !names.includes(n));
  if (missing.length) problems.push(`scripts/demo/settings.ts sets ${missing.join(", ")}, which README.md's demo:settings block lacks`);
  const unset = usedNames(w).filter((n) => !names.includes(n) && !["HOME", "PATH"].includes(n));
  if (unset.length) problems.push(`README.md's walk-through uses ${unset.join(", ")} without a demo:settings line`);
  return problems;
}

export async function demoSettings(w: WalkthroughLine[], cache: string): Promise<Record<string, string>> {
  const problems = settingsProblems(w);
  if (problems.length) throw new Error(problems.join("; "));
  const run = join(cache, "run");
  const values: Record<(typeof DEMO_SETTINGS)[number], string> = {
    STATE: join(run, "state"),
    ROOT: join(cache, "root-trixie"),
    SITE: join(run, "site"),
    ADMIN_KEY: join(run, "id_ed25519.pub"),
    LISTEN: `127.0.0.1:${await freePort()}`,
    MIRROR_IMAGES: join(run, "mirror/images"),
    MIRROR_TLS: join(run, "mirror/tls"),
    MIRROR_LISTEN: `127.0.0.1:${await freePort()}`,
    NGINX_CONF: join(run, "mirror/nginx-airroot.conf"),
  };
  return values;
}
