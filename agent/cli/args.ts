import { parseArgs, type ParseArgsConfig } from "node:util";
import { InvalidInputError } from "../errors.js";

type Options = NonNullable<ParseArgsConfig["options"]>;

/** node's parseArgs, with its errors turned into ours (named flag, no stack trace). */
export function parseFlags<T extends Options>(command: string, args: string[], options: T) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (error) {
    throw new InvalidInputError(command, [{ path: "", message: (error as Error).message }]);
  }
}

const DURATION = /^(\d+)(ms|s|m)?$/;
const UNIT_MS = { ms: 1, s: 1_000, m: 60_000 } as const;

/** `500ms`, `5s`, `2m`, or plain milliseconds. */
export function parseDuration(flag: string, text: string): number {
  const match = DURATION.exec(text);
  if (!match) throw new InvalidInputError(flag, [{ path: flag, message: "must be a duration like 500ms, 5s or 2m", value: text }]);
  return Number(match[1]) * UNIT_MS[(match[2] ?? "ms") as keyof typeof UNIT_MS];
}
