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
