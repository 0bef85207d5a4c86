import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { z } from "zod";
import { writeFileAtomic } from "../../agent/files/write-file-atomic.js";
import { parseJsonWith } from "../../agent/model/validate.js";
import { wireBackendSchema } from "../../proto/messages.js";
import type { BackendMapping } from "../config/controller-config.js";
import { toWire, type DesiredBackendState } from "./desired-store.js";

/*
 * What the fleet was last told to run, per backend, with the mapping that made it: a restarted
 * controller (a SIGHUP re-read is one) compares the new config against it, so that an operator's
 * change of a mapping can go out in waves instead of to every agent at once.
 */

const mappingSchema = z.strictObject({ service: z.string(), tag: z.string().optional(), allowEmpty: z.boolean() });
type MappingKey = z.infer<typeof mappingSchema>;

const fileSchema = z.strictObject({
  format: z.literal(1),
  backends: z.array(z.strictObject({ mapping: mappingSchema, state: wireBackendSchema })),
});

export interface RanBefore {
  mapping: MappingKey;
  state: DesiredBackendState;
}

const FILE = "desired-states.json";

/** The part of a mapping that shapes a backend's content (which agents get it is not staged). */
export function mappingKey(mapping: BackendMapping): MappingKey {
  return { service: mapping.service, ...(mapping.tag === undefined ? {} : { tag: mapping.tag }), allowEmpty: mapping.allowEmpty };
}

export function sameMapping(a: MappingKey, b: MappingKey): boolean {
  return a.service === b.service && a.tag === b.tag && a.allowEmpty === b.allowEmpty;
}

/** By backend name; a missing file is an empty map, a corrupt one is logged and ignored. */
export async function loadRanBefore(stateDir: string, logger: Logger): Promise<Map<string, RanBefore>> {
  const path = join(stateDir, FILE);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return new Map();
    throw error;
  }
  try {
    const file = parseJsonWith(fileSchema, text, path);
    return new Map(file.backends.map(({ mapping, state }) => [state.name, { mapping, state: { ...state, held: null, dropped: [] } }]));
  } catch (error) {
    // Only staging needs it: without it, config changes go out at once, as on a first start.
    logger.error({ file: path, err: (error as Error).message }, "stored desired states unreadable: config changes since the last run are not staged");
    return new Map();
  }
}

export async function saveRanBefore(stateDir: string, entries: ReadonlyArray<{ mapping: BackendMapping; state: DesiredBackendState }>): Promise<void> {
  const backends = entries.map(({ mapping, state }) => ({ mapping: mappingKey(mapping), state: toWire(state) }));
  await writeFileAtomic(join(stateDir, FILE), JSON.stringify({ format: 1, backends }) + "\n");
}
