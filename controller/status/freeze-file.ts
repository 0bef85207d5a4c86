import { rm } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { writeFileAtomic } from "../../agent/files/write-file-atomic.js";
import { parseJsonWith } from "../../agent/model/validate.js";
import { readStateFile } from "../core/state-file.js";

/*
 * The kill switch outlives the controller: a fleet frozen because something is wrong must not
 * be unfrozen by a restart. Absent file: not frozen.
 */

const freezeSchema = z.strictObject({ since: z.number().int().min(0), reason: z.string().min(1).max(512) });
export type Freeze = z.infer<typeof freezeSchema>;

const FILE = "freeze.json";

/** The stored freeze, or null. A file that cannot be read or parsed throws: better not to start than to unfreeze by accident. */
export async function loadFreeze(stateDir: string): Promise<Freeze | null> {
  const path = join(stateDir, FILE);
  const text = await readStateFile(path);
  return text === null ? null : parseJsonWith(freezeSchema, text, path);
}

export async function saveFreeze(stateDir: string, freeze: Freeze | null): Promise<void> {
  const path = join(stateDir, FILE);
  if (freeze === null) await rm(path, { force: true });
  else await writeFileAtomic(path, JSON.stringify(freeze) + "\n");
}
