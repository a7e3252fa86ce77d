// Argument pieces shared by the server-side commands.

export const stateArg = { type: "string", description: "server state directory (as given to `airroot serve init`)", required: true } as const;

/** All values of a repeatable option (`--mac a --mac b` or `--mac a,b`); citty keeps only the last one. */
export function repeated(rawArgs: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const a = rawArgs[i];
    if (a === `--${name}` && i + 1 < rawArgs.length) out.push(rawArgs[++i]);
    else if (a.startsWith(`--${name}=`)) out.push(a.slice(name.length + 3));
  }
  return out.flatMap((v) => v.split(",")).map((v) => v.trim()).filter(Boolean);
}

/**
 * The last value of a string option, read from rawArgs. Needed where citty's parse loses it: citty turns every
 * `--no-NAME` into "NAME is false" and drops its value, so `--no-tpm warn` also clobbers `--tpm SPEC`.
 */
export function lastValue(rawArgs: string[], name: string): string | undefined {
  let v: string | undefined;
  for (let i = 0; i < rawArgs.length; i++) {
    const a = rawArgs[i];
    if (a === "--") break;
    if (a === `--${name}`) v = i + 1 < rawArgs.length ? rawArgs[++i] : "";
    else if (a.startsWith(`--${name}=`)) v = a.slice(name.length + 3);
  }
  return v;
}
