import type { CommandVerb } from "./commands.js";

/**
 * What the Runtime API client tells whoever watches it (the agent's metrics), so that the
 * client itself depends on no metrics library. Only batches that reached HAProxy are told:
 * one that could not connect sent nothing.
 */
export interface RuntimeObserver {
  /**
   * Once per command of a batch: `ok` when its reply says it took effect; false when HAProxy
   * refused it, or when it got no reply (connection lost, batch timed out), since it may or
   * may not have run.
   */
  commandSent(verb: CommandVerb, ok: boolean): void;
  /** Once per batch, from its first write to its last reply, or to its failure (`answered` false). */
  batch(seconds: number, answered: boolean): void;
}
