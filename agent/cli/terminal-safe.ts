/*
 * Text from outside (HAProxy's replies, a controller's pushes, files) shown on an operator's
 * terminal with its control characters escaped: an escape sequence cannot clear the screen,
 * set the window title or move the cursor, and a newline cannot forge a row of a table.
 */

/** C0 and C1 controls, DEL, and the Unicode line separators and bidirectional overrides. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

const NAMED: Readonly<Record<string, string>> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

function escape(char: string): string {
  const code = char.charCodeAt(0);
  return NAMED[char] ?? (code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`);
}

/** One value on one line: every control character escaped, newlines included. */
export function terminalSafe(text: string): string {
  return text.replace(CONTROL, escape);
}

/** Lines of text: each line made safe, the line breaks kept. */
export function terminalSafeLines(text: string): string {
  return text.split("\n").map(terminalSafe).join("\n");
}

/** JSON.stringify's output with the controls it leaves raw (DEL, C1, U+2028...) as \u escapes: still the same JSON. */
export function terminalSafeJson(json: string): string {
  return json.replace(/[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
