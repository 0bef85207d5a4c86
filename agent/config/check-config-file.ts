import { EXIT } from "../cli/run-cli.js";
import { terminalSafe } from "../cli/terminal-safe.js";
import { InvalidInputError } from "../errors.js";

/**
 * Both programs' check: `FILE: ok` on stdout and 0, or one line per problem on stderr and 2.
 * What the loader says is valid but probably not meant (its result's `warnings`, as the agent's
 * PreparedAgent has) goes to stderr, one line each: stdout stays `FILE: ok` for scripts.
 */
export async function checkConfigFile(file: string, load: (file: string) => Promise<unknown>): Promise<number> {
  let loaded: unknown;
  try {
    loaded = await load(file);
  } catch (error) {
    if (!(error instanceof InvalidInputError)) throw error;
    // Each problem as its own error's message: the usual wording, one line each.
    for (const issue of error.issues) process.stderr.write(terminalSafe(new InvalidInputError(error.source, [issue]).message) + "\n");
    return EXIT.invalidInput;
  }
  for (const warning of warningsOf(loaded)) process.stderr.write(terminalSafe(`${file}: warning: ${warning}`) + "\n");
  process.stdout.write(terminalSafe(`${file}: ok`) + "\n");
  return EXIT.ok;
}

function warningsOf(loaded: unknown): string[] {
  if (typeof loaded !== "object" || loaded === null || !("warnings" in loaded) || !Array.isArray(loaded.warnings)) return [];
  return loaded.warnings.filter((warning): warning is string => typeof warning === "string");
}
