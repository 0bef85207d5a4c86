import type { Logger } from "pino";
import { HafleetError, InvalidInputError, UsageError } from "../errors.js";

export interface Command {
  help: string;
  run: (args: string[], log: Logger) => Promise<number>;
}

/** Exit codes shared by both executables, so scripts can tell bad input from an outage. */
export const EXIT = { ok: 0, notConverged: 1, invalidInput: 2, unreachable: 3, internal: 70 } as const;

/**
 * Dispatches `PROGRAM COMMAND [args]`, prints help, and turns errors into one clear line
 * on stderr and an exit code, never a stack trace for something the user got wrong.
 */
export async function runCli(program: string, help: string, commands: Record<string, Command>, argv: string[], log: Logger): Promise<number> {
  const [name, ...args] = argv;
  if (name === undefined || name === "-h" || name === "--help" || name === "help") {
    process.stdout.write(help + "\n");
    return name === undefined ? EXIT.invalidInput : EXIT.ok;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`${program}: unknown command '${name}'\n\n${help}\n`);
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
    process.stderr.write(`${program} ${name}: ${error.message}\n\n${command.help}\n`);
    return EXIT.invalidInput;
  }
  if (error instanceof HafleetError) {
    log.error({ code: error.code, err: error }, error.message);
    process.stderr.write(`${program} ${name}: ${error.message}\n`);
    return error instanceof InvalidInputError ? EXIT.invalidInput : EXIT.unreachable;
  }
  log.fatal({ err: error }, "unexpected error");
  process.stderr.write(`${program} ${name}: unexpected error: ${(error as Error).stack ?? String(error)}\n`);
  return EXIT.internal;
}
