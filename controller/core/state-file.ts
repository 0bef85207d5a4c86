import { readFile } from "node:fs/promises";

/**
 * A state file's text, or null when there is none yet (a first start). Any other failure
 * throws: a state file that exists but cannot be read is not the same as no state.
 */
export async function readStateFile(path: string): Promise<string | null> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw error;
  }
}
