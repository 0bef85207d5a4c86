import type { Logger } from "pino";
import { HafleetError, InvalidInputError, UsageError } from "../errors.js";
import { errorLine, fileErrorLine } from "./error-line.js";
import { terminalSafe } from "./terminal-safe.js";

export interface Command {
  help: string;
  run: (args: string[], log: Logger) => Promise<number>;
}

/**
 * Exit codes shared by both executables, so scripts can tell bad input from an outage; 3 also
 * when this host stands in the way (a port taken, a folder not writable).
 */
export const EXIT = { ok: 0, notConverged: 1, invalidInput: 2, unreachable: 3, internal: 70 } as const;

/**
 * Dispatches `PROGRAM COMMAND [args]`, prints help, and turns errors into one clear line
 * on stderr and an exit code, never a stack trace for something the user got wrong.
 */
export async function runCli(program: string, help: string, commands: Record<string, Command>, argv: string[], log: Logger): Promise<number> {
  ignoreClosedStdout();
  const [name, ...args] = argv;
  if (name === undefined || name === "-h" || name === "--help" || name === "help") {
    process.stdout.write(help + "\n");
    return name === undefined ? EXIT.invalidInput : EXIT.ok;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`${program}: unknown command '${terminalSafe(name)}'\n\n${help}\n`);
    return EXIT.invalidInput;
  }
  if (args.includes("-h") || args.includes("--help")) {
    process.stdout.write(command.help + "\n");
    return EXIT.ok;
  }
  try {
    return await command.run(args, log);
  } catch (error) {
    return reportError(program, name, command, error, log);
  }
}

function reportError(program: string, name: string, command: Command, error: unknown, log: Logger): number {
  if (error instanceof UsageError) {
    process.stderr.write(`${errorLine(program, name, error)}\n\n${command.help}\n`);
    return EXIT.invalidInput;
  }
  if (error instanceof HafleetError) {
    // The line is the whole report: a logged error object would repeat it with a stack.
    process.stderr.write(`${errorLine(program, name, error)}\n`);
    return error instanceof InvalidInputError ? EXIT.invalidInput : EXIT.unreachable;
  }
  const fileLine = fileErrorLine(program, name, error);
  if (fileLine !== null) {
    process.stderr.write(`${fileLine}\n`);
    return EXIT.unreachable;
  }
  log.fatal({ err: error }, "unexpected error");
  process.stderr.write(`${program} ${name}: unexpected error: ${(error as Error).stack ?? String(error)}\n`);
  return EXIT.internal;
}

/**
 * `hafleet status | head -1`: the reader is gone, which is no error of the command's. Its later
 * writes are dropped and it ends with its own exit code, instead of dying of an unhandled EPIPE.
 */
function ignoreClosedStdout(): void {
  if (process.stdout.listenerCount("error") > 0) return;
  process.stdout.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code !== "EPIPE") throw error;
  });
}
