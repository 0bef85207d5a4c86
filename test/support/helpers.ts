import { expect } from "vitest";
import { InvalidInputError, type InputIssue } from "../../agent/errors.js";

/** What `run` threw, or undefined: for asserting on an error's fields, not just its message. */
export function caught(run: () => unknown): unknown {
  try {
    run();
  } catch (error) {
    return error;
  }
  return undefined;
}

/** A small deterministic PRNG (mulberry32), so a failing fuzz case can be replayed from its seed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Runs `run`, which must throw InvalidInputError from `source` with exactly `issues`, and return nothing. */
export function expectInvalid(run: () => unknown, issues: InputIssue[], source: string): InvalidInputError {
  let returned: unknown;
  const error = caught(() => {
    returned = run();
  });
  expect(returned).toBeUndefined();
  expect(error).toBeInstanceOf(InvalidInputError);
  const invalid = error as InvalidInputError;
  expect(invalid.code).toBe("HAFLEET_INVALID_INPUT");
  expect(invalid.name).toBe("InvalidInputError");
  expect(invalid.source).toBe(source);
  expect(invalid.issues).toEqual(issues);
  return invalid;
}

/**
 * Polls `probe` until it gives a value (not undefined or false), or fails naming `what` and,
 * when given, what `explain` says of the state then: waiting on a real process, not on a timer.
 */
export async function until<T>(probe: () => T | undefined | false | Promise<T | undefined | false>, what: string, timeoutMs = 10_000, explain?: () => Promise<string>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${explain ? `; ${await explain()}` : ""}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
