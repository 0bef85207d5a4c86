import { z } from "zod";
import { parseDuration } from "../cli/args.js";

// A longer delay overflows node's timers, which then fire at once instead of never.
const TIMER_MAX_MS = 2_147_483_647;
const DURATION_MESSAGE = "must be a duration: milliseconds, or a string like 500ms, 5s or 2m";

/**
 * Milliseconds as a number, or the text the flags take: `500ms`, `5s`, `2m`. `minMs` is 0 where
 * zero means "at once" (a drain), 1 where zero would make a timer spin (a resync).
 */
export function durationSchema(minMs: number) {
  return z
    .union([z.number(), z.string()], { error: DURATION_MESSAGE })
    .transform((value, ctx) => {
      if (typeof value === "number") return value;
      try {
        return parseDuration("duration", value);
      } catch {
        ctx.addIssue({ code: "custom", message: DURATION_MESSAGE, input: value });
        return z.NEVER;
      }
    })
    .pipe(z.number().int("must be a whole number of milliseconds").min(minMs, `must be at least ${minMs} ms`).max(TIMER_MAX_MS, `must be at most ${TIMER_MAX_MS} ms`));
}
