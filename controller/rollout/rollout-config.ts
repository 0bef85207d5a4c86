import { z } from "zod";
import { durationSchema, labelKeySchema, labelValueSchema } from "../config/config-values.js";

/*
 * How staged changes go out: a canary set of agents first, then growing waves, each judged
 * before the next (see wave-judge.ts). One strict block, every field defaulted.
 */

/**
 * Shares are decimal fractions held in binary floats (0.07 * 100 is 7.000000000000001): a
 * share is rounded or compared with this much slack, so that 7% of 100 agents is 7, not 8.
 */
export const SHARE_EPSILON = 1e-9;

const SHARE_MESSAGE = "must be more than 0 and at most 1";
const shareSchema = z.number({ error: "must be a number" }).gt(0, SHARE_MESSAGE).max(1, SHARE_MESSAGE);

export type Canary = { count: number } | { share: number };

// Both alternatives in one strict object rather than a zod union, as for `discovery`: a
// union's failure says "invalid input" for the whole block, this names the wrong field.
const canarySchema = z
  .strictObject({
    count: z.number({ error: "must be a number" }).int("must be a whole number").min(1, "must be at least 1").optional(),
    share: shareSchema.optional(),
  })
  .transform((canary, ctx): Canary => {
    if (canary.count !== undefined && canary.share === undefined) return { count: canary.count };
    if (canary.share !== undefined && canary.count === undefined) return { share: canary.share };
    ctx.addIssue({ code: "custom", message: "must have exactly one of count, share", input: canary });
    return z.NEVER;
  });

const wavesSchema = z
  .array(shareSchema, { error: "must be a list of cumulative shares, like [0.1, 0.5, 1]" })
  .min(1, "must list at least one wave")
  .superRefine((waves, ctx) => {
    // Runs even when an entry is out of range: every problem shows in one pass.
    waves.forEach((share, index) => {
      const before = waves[index - 1];
      if (before !== undefined && share <= before) {
        ctx.addIssue({ code: "custom", path: [index], message: `must be more than the wave before it (${before}): shares are cumulative`, input: share });
      }
    });
    const last = waves.length - 1;
    if (last >= 0 && waves[last] !== 1) {
      ctx.addIssue({ code: "custom", path: [last], message: "the last wave must be 1, or some agents never get the change", input: waves[last] });
    }
  });

export const rolloutConfigSchema = z.strictObject({
  canary: canarySchema.default({ count: 1 }),
  /** Canary agents are chosen among the agents with these labels first; absent: any agent. */
  canarySelector: z
    .record(labelKeySchema, labelValueSchema, {
      error: (issue) => (issue.code === "invalid_key" ? "label names must be 1 to 63 letters, digits, '.', '_' or '-'" : undefined),
    })
    .optional(),
  /** Cumulative shares of the agents left after the canary. */
  waves: wavesSchema.default([0.1, 0.25, 0.5, 1]),
  /** How long a wave must stay healthy, once every agent of it acked, before the next starts. */
  bakeMs: durationSchema.default(30_000),
  /** How long a wave's agents have to ack before the rollout halts. */
  waveTimeoutMs: durationSchema.default(120_000),
  /** A halted rollout puts every agent back on the baseline at once. */
  autoRollback: z.boolean({ error: "must be true or false" }).default(true),
  /** How much an agent's share of serving servers may fall during its wave (0..1). */
  maxServingDrop: z.number({ error: "must be a number" }).min(0, "must be between 0 and 1").max(1, "must be between 0 and 1").default(0.1),
  /**
   * A backend whose mapping changed in the config (service, tag, allowEmpty) since the fleet
   * last ran it goes out in waves too. Needs stateDir (what ran is kept there).
   */
  stageConfigChanges: z.boolean({ error: "must be true or false" }).default(true),
});

export type RolloutConfig = z.output<typeof rolloutConfigSchema>;
/** The block as written, before defaults and duration parsing. */
export type RolloutConfigInput = z.input<typeof rolloutConfigSchema>;
