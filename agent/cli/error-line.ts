import { InvalidInputError, type HafleetError } from "../errors.js";
import { FILE_PROBLEMS } from "./read-input.js";
import { terminalSafe } from "./terminal-safe.js";

/**
 * A user's mistake or an outage as the one line the CLI prints: `PROGRAM COMMAND: what is
 * wrong`, without the repeats that nesting adds (`--dir: --dir:`, `apply: apply:`), and with
 * control characters of anything quoted from outside escaped.
 */
export function errorLine(program: string, command: string, error: HafleetError): string {
  return terminalSafe(`${program} ${command}: ${describe(command, error)}`);
}

function describe(command: string, error: HafleetError): string {
  if (!(error instanceof InvalidInputError)) return withoutPrefix(error.message, command);
  const source = error.source === command || error.source === "command line" ? "" : error.source;
  const issues = error.issues.map((issue) => {
    const path = sameName(issue.path, source) || sameName(issue.path, command) ? "" : issue.path;
    return new InvalidInputError("", [{ ...issue, path }]).message.replace(/^: /, "");
  });
  return [source, issues.join("; ")].filter((part) => part !== "").join(": ");
}

/** `socket` and `--socket` name the same flag. */
function sameName(a: string, b: string): boolean {
  return a !== "" && a.replace(/^--/, "") === b.replace(/^--/, "");
}

function withoutPrefix(message: string, command: string): string {
  return message.startsWith(`${command}: `) ? message.slice(command.length + 2) : message;
}

/**
 * A file system error (a folder that is a file, a full or read-only disk) as the line the CLI
 * prints: the host stands in the way, not a bug. Null for any other error, which keeps its stack.
 */
export function fileErrorLine(program: string, command: string, error: unknown): string | null {
  const { code, syscall, path } = (error ?? {}) as NodeJS.ErrnoException;
  const problem = code === undefined ? undefined : FILE_PROBLEMS[code];
  if (problem === undefined || typeof syscall !== "string" || typeof path !== "string") return null;
  return terminalSafe(`${program} ${command}: cannot ${syscall} ${path}: ${problem} (${code})`);
}
