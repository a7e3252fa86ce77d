// Text from untrusted sources (a node's status report, names in a refused request) on an admin's terminal: control
// characters would act on the terminal or forge lines. Besides C0 and DEL that means the C1 controls U+0080–U+009F
// (U+009B is a CSI that many terminals obey), Unicode format characters (bidi embeddings and overrides U+202A–U+202E,
// isolates U+2066–U+2069, marks, zero-width characters, BOM, tags), the line and paragraph separators and lone
// surrogates.

/** One character that must never reach a terminal as is. */
const UNSAFE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/u;
const UNSAFE_ALL = new RegExp(UNSAFE.source, "gu");

/** True if `s` holds no unsafe character. */
export const isPrintable = (s: string): boolean => !UNSAFE.test(s);

/** For storage: every unsafe character becomes a space. */
export const cleanText = (s: string): string => s.replace(UNSAFE_ALL, " ");

/** For a log line: every unsafe character but the tab becomes a space. */
export const cleanLine = (s: string): string => s.replace(UNSAFE_ALL, (c) => (c === "\t" ? c : " "));

/** For display: every unsafe character as a visible escape (\x9b, \u202e, \u{e0001}); the rest unchanged. */
export function escapeText(s: string): string {
  return s.replace(UNSAFE_ALL, (c) => {
    const cp = c.codePointAt(0)!;
    return cp <= 0xff ? `\\x${cp.toString(16).padStart(2, "0")}` : cp <= 0xffff ? `\\u${cp.toString(16).padStart(4, "0")}` : `\\u{${cp.toString(16)}}`;
  });
}

/**
 * JSON text with every unsafe character in a string written as a \u escape: the same value, safe to print.
 * (JSON.stringify escapes C0 controls and lone surrogates itself; a raw newline in its output is indentation.)
 */
export function safeJson(value: unknown, space?: number): string {
  return JSON.stringify(value, null, space).replace(UNSAFE_ALL, (c) => c === "\n" ? c :
    [...Array(c.length).keys()].map((i) => `\\u${c.charCodeAt(i).toString(16).padStart(4, "0")}`).join(""));
}
