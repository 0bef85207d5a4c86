import { readFile } from "node:fs/promises";
import { InvalidInputError } from "../errors.js";

/** What a file system error code means, in words; only these are taken for the host's, not a bug. */
export const FILE_PROBLEMS: Readonly<Record<string, string>> = {
  ENOENT: "no such file",
  EISDIR: "is a folder, not a file",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  ENOTDIR: "a part of the path is not a folder",
  EROFS: "the file system is read-only",
  ENOSPC: "no space left on the device",
  EDQUOT: "disk quota exceeded",
  EMFILE: "too many open files",
};
const PROBLEMS = FILE_PROBLEMS;

/** Why a file could not be read, in words: `no such file`, `is a folder, not a file`. */
export function readProblem(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  return (code === undefined ? undefined : PROBLEMS[code]) ?? (error as Error).message;
}

/** A file named on the command line ('-': stdin); one that cannot be read is the user's input error. */
export async function readInputFile(file: string, what: string): Promise<string> {
  if (file === "-") return readStdin();
  try {
    return await readFile(file, "utf8");
  } catch (error) {
    throw new InvalidInputError(file, [{ path: "", message: `cannot read the ${what}: ${readProblem(error)}` }]);
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}
