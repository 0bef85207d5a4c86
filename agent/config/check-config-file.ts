import { EXIT } from "../cli/run-cli.js";
import { InvalidInputError } from "../errors.js";

/** Both programs' check: `FILE: ok` on stdout and 0, or one line per problem on stderr and 2. */
export async function checkConfigFile(file: string, load: (file: string) => Promise<unknown>): Promise<number> {
  try {
    await load(file);
  } catch (error) {
    if (!(error instanceof InvalidInputError)) throw error;
    // Each problem as its own error's message: the usual wording, one line each.
    for (const issue of error.issues) process.stderr.write(new InvalidInputError(error.source, [issue]).message + "\n");
    return EXIT.invalidInput;
  }
  process.stdout.write(`${file}: ok\n`);
  return EXIT.ok;
}
