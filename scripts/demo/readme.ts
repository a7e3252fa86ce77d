// The README's deployment walk-through as data: `make demo` runs these very lines, so the README cannot drift.
// A block is a ```sh fence preceded by an HTML comment `<!-- demo:KIND -->`:
//   settings  VAR=value lines a site edits (the demo supplies its own values for every one of them)
//   run       one-shot commands, run in order, one step per line
//   serve     long-running services, started in the background by the demo
import { readFileSync } from "node:fs";

export type BlockKind = "settings" | "run" | "serve";
export interface WalkthroughLine { kind: BlockKind; text: string; comment: string; line: number }

/** Every command line of the README's demo blocks, in order; `\` continuations are joined, comments split off. */
export function walkthrough(readme: string): WalkthroughLine[] {
  const lines = readme.split("\n");
  const out: WalkthroughLine[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = /^<!-- demo:(settings|run|serve) -->$/.exec(lines[i].trim());
    if (!m) continue;
    const kind = m[1] as BlockKind;
    if (!/^```(sh|bash)$/.test(lines[i + 1]?.trim() ?? "")) throw new Error(`README.md:${i + 1}: demo:${kind} must be followed by a \`\`\`sh block`);
    let j = i + 2;
    for (; j < lines.length && lines[j].trim() !== "```"; j++) {
      let text = lines[j];
      const start = j + 1;
      while (text.endsWith("\\") && j + 1 < lines.length) text = text.slice(0, -1).trimEnd() + " " + lines[++j].trim();
      const split = splitComment(text);
      if (split.text) out.push({ kind, text: split.text, comment: split.comment, line: start });
    }
    if (j >= lines.length) throw new Error(`README.md:${i + 1}: demo:${kind} block is not closed`);
    i = j;
  }
  return out;
}

/** Splits a trailing `# comment` off a shell line (a # inside quotes or a word is not a comment). */
function splitComment(s: string): { text: string; comment: string } {
  let quote = "";
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quote) { if (c === quote) quote = ""; continue; }
    if (c === "'" || c === '"') quote = c;
    else if (c === "#" && (i === 0 || /\s/.test(s[i - 1]))) return { text: s.slice(0, i).trim(), comment: s.slice(i + 1).trim() };
  }
  return { text: s.trim(), comment: "" };
}

/** The variable names the settings block defines. */
export function settingNames(w: WalkthroughLine[]): string[] {
  return w.filter((l) => l.kind === "settings").map((l) => {
    const m = /^([A-Z_][A-Z0-9_]*)=/.exec(l.text);
    if (!m) throw new Error(`README.md:${l.line}: a demo:settings line must be VAR=value, got "${l.text}"`);
    return m[1];
  });
}

/** $VARS used by the run and serve lines. */
export function usedNames(w: WalkthroughLine[]): string[] {
  const names = new Set<string>();
  for (const l of w) if (l.kind !== "settings") for (const m of l.text.matchAll(/\$\{?([A-Z_][A-Z0-9_]*)/g)) names.add(m[1]);
  return [...names];
}

export function readWalkthrough(path: string): WalkthroughLine[] {
  return walkthrough(readFileSync(path, "utf8"));
}
