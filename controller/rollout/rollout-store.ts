import { readFile, rename } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import type { z } from "zod";
import { InvalidInputError } from "../../agent/errors.js";
import { writeFileAtomic } from "../../agent/files/write-file-atomic.js";
import { parseJsonWith } from "../../agent/model/validate.js";
import { rolloutStateSchema, type RolloutState } from "./rollout-state.js";

/** The last rollout, in `<stateDir>/rollout.json`: a restarted controller carries on with it. */
export class RolloutStore<T> {
  readonly path: string;
  private readonly schema: z.ZodType<RolloutState<T>>;

  constructor(
    stateDir: string,
    /** Validates the baseline and target payloads read back. */
    payload: z.ZodType<T>,
    private readonly logger: Logger,
    private readonly clock: () => number = Date.now,
  ) {
    this.path = join(stateDir, "rollout.json");
    this.schema = rolloutStateSchema(payload);
  }

  /**
   * The stored rollout, or null when there is none. A corrupt file is moved aside, not deleted
   * (an operator may want it): the controller then starts with no rollout rather than not at all.
   */
  async load(): Promise<RolloutState<T> | null> {
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw error;
    }
    try {
      return parseJsonWith(this.schema, text, this.path);
    } catch (error) {
      if (!(error instanceof InvalidInputError)) throw error;
      const aside = `${this.path}.corrupt-${this.clock()}`;
      await rename(this.path, aside);
      this.logger.error({ file: this.path, movedTo: aside, err: error.message }, "stored rollout state is corrupt: moved aside, starting with no rollout");
      return null;
    }
  }

  async save(state: RolloutState<T>): Promise<void> {
    await writeFileAtomic(this.path, JSON.stringify(state, null, 2) + "\n");
  }
}
