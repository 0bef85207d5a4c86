import { readFile, rename } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { z } from "zod";
import { InvalidInputError } from "../errors.js";
import { writeFileAtomic } from "../files/write-file-atomic.js";
import { refineUniqueServers, type DesiredServer } from "../model/desired-state.js";
import { parseJsonWith } from "../model/validate.js";
import type { Name } from "../model/values.js";
import { versionSchema, wireBackendSchema, type DesiredPush } from "../../proto/messages.js";

/**
 * The desired state the controller gave this agent, kept in `<stateDir>/desired.json` so that
 * an agent restarted without a controller still serves it. Pure operations on it first, then
 * the file store.
 */

export interface StoredBackend {
  name: Name;
  /** The version the controller last pushed for this backend. */
  version: string;
  allowEmpty: boolean;
  servers: DesiredServer[];
  /** The version last applied successfully on every socket ("" if none yet). */
  appliedVersion: string;
}

export interface DesiredSet {
  /** The version of the last push: the digest of every backend version the agent should run. */
  version: string;
  backends: ReadonlyMap<string, StoredBackend>;
}

export function emptyDesiredSet(): DesiredSet {
  return { version: "", backends: new Map() };
}

/**
 * A pushed backend replaces that backend entirely; a removed one is forgotten (never drained:
 * losing an assignment must not touch HAProxy); anything not mentioned stays as it is.
 */
export function mergePush(current: DesiredSet, push: Pick<DesiredPush, "version" | "backends" | "removedBackends">): DesiredSet {
  const backends = new Map(current.backends);
  for (const name of push.removedBackends) backends.delete(name);
  for (const backend of push.backends) {
    backends.set(backend.name, {
      name: backend.name,
      version: backend.version,
      allowEmpty: backend.allowEmpty,
      servers: backend.servers,
      appliedVersion: current.backends.get(backend.name)?.appliedVersion ?? "",
    });
  }
  return { version: push.version, backends };
}

/**
 * Records the current version as applied for every backend with no failure. The same object
 * comes back when nothing changed, so callers can skip a write.
 */
export function markApplied(current: DesiredSet, failures: ReadonlyMap<string, string>): DesiredSet {
  let backends: Map<string, StoredBackend> | null = null;
  for (const backend of current.backends.values()) {
    if (failures.has(backend.name) || backend.appliedVersion === backend.version) continue;
    backends ??= new Map(current.backends);
    backends.set(backend.name, { ...backend, appliedVersion: backend.version });
  }
  return backends === null ? current : { version: current.version, backends };
}

/** What the hello says the agent runs: only versions that were applied successfully. */
export function appliedVersions(set: DesiredSet): Record<string, string> {
  // fromEntries defines own properties, so a backend named `__proto__` stays a plain key.
  // Never-applied backends are listed too, with "": the controller must be able to remove them.
  return Object.fromEntries([...set.backends.values()].map((backend) => [backend.name, backend.appliedVersion]));
}

const FORMAT = 1;

const storedBackendSchema = z
  .strictObject({ ...wireBackendSchema.shape, appliedVersion: versionSchema })
  .superRefine((backend, ctx) => refineUniqueServers(backend.servers, ctx));

// Backends are a list, not a record keyed by name: names come from the network and
// `__proto__` is a valid one.
const storedFileSchema = z
  .strictObject({ format: z.literal(FORMAT), version: versionSchema, backends: z.array(storedBackendSchema) })
  .superRefine((file, ctx) => {
    const seen = new Set<string>();
    file.backends.forEach((backend, index) => {
      if (seen.has(backend.name)) ctx.addIssue({ code: "custom", path: ["backends", index, "name"], message: "backend listed twice", input: backend.name });
      seen.add(backend.name);
    });
  });

export function serializeDesiredSet(set: DesiredSet): string {
  const backends = [...set.backends.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return JSON.stringify({ format: FORMAT, version: set.version, backends }, null, 2) + "\n";
}

/** Parses the file's text; throws InvalidInputError naming what is wrong. */
export function parseDesiredSet(text: string, source: string): DesiredSet {
  const parsed = parseJsonWith(storedFileSchema, text, source);
  return { version: parsed.version, backends: new Map(parsed.backends.map((backend) => [backend.name, backend])) };
}

export class LocalStore {
  readonly path: string;

  constructor(
    stateDir: string,
    private readonly logger: Logger,
    private readonly clock: () => number = Date.now,
  ) {
    this.path = join(stateDir, "desired.json");
  }

  /**
   * The stored set; none yet gives an empty one. A corrupt file is moved aside, not deleted
   * (an operator may want it), and the agent starts with nothing rather than not at all.
   */
  async load(): Promise<DesiredSet> {
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return emptyDesiredSet();
      throw error;
    }
    try {
      return parseDesiredSet(text, this.path);
    } catch (error) {
      if (!(error instanceof InvalidInputError)) throw error;
      const aside = `${this.path}.corrupt-${this.clock()}`;
      await rename(this.path, aside);
      this.logger.error({ file: this.path, movedTo: aside, err: error.message }, "stored desired state is corrupt: moved aside, starting with nothing");
      return emptyDesiredSet();
    }
  }

  async save(set: DesiredSet): Promise<void> {
    await writeFileAtomic(this.path, serializeDesiredSet(set));
  }
}
