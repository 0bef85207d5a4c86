import { lineError, quote, replyLines } from "./fields.js";

const COMMAND = "show backend";
const HEADER = "# name";

/**
 * The characters HAProxy itself allows in a proxy name (alphanumerics, '-', '_', '.', ':'):
 * a line with anything else is not a backend name but some other text.
 */
const BACKEND_NAME = /^[A-Za-z0-9_.:-]+$/;

/** Parses the reply to `show backend`: its `# name` header, then one backend a line. */
export function parseBackendList(text: string): string[] {
  const lines = replyLines(COMMAND, text);
  const first = lines[0];
  if (first === undefined) throw lineError(COMMAND, 1, `empty reply, expected '${HEADER}'`);
  if (first !== HEADER) throw lineError(COMMAND, 1, `expected '${HEADER}', got ${quote(first)}`);
  const names = lines.slice(1);
  checkNames(names);
  return names;
}

function checkNames(names: readonly string[]): void {
  const seen = new Set<string>();
  names.forEach((name, i) => {
    const lineNumber = i + 2;
    if (!BACKEND_NAME.test(name)) throw lineError(COMMAND, lineNumber, `not a backend name: ${quote(name)}`);
    if (seen.has(name)) throw lineError(COMMAND, lineNumber, `backend ${quote(name)} listed twice`);
    seen.add(name);
  });
}
