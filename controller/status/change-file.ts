import { join } from "node:path";
import { z } from "zod";
import { writeFileAtomic } from "../../agent/files/write-file-atomic.js";
import { parseJsonWith } from "../../agent/model/validate.js";
import { readStateFile } from "../core/state-file.js";
import { changeStatusSchema, type ChangeStatus } from "./status-schema.js";

/*
 * The recent changes and how each ended, kept in stateDir so that a restart does not forget
 * that a change was rolled back or failed. Absent file: no change yet.
 */

const FILE = "changes.json";
const changesFileSchema = z.strictObject({ format: z.literal(1), changes: z.array(changeStatusSchema).max(1_000) });

/** The stored changes; a file that cannot be parsed throws (the caller logs it and starts empty). */
export async function loadChanges(stateDir: string): Promise<ChangeStatus[]> {
  const path = join(stateDir, FILE);
  const text = await readStateFile(path);
  return text === null ? [] : parseJsonWith(changesFileSchema, text, path).changes;
}

export async function saveChanges(stateDir: string, changes: readonly ChangeStatus[]): Promise<void> {
  await writeFileAtomic(join(stateDir, FILE), JSON.stringify({ format: 1, changes }) + "\n");
}
