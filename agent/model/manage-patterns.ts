import { z } from "zod";
import type { InputIssue } from "../errors.js";
import { NAME_MAX_LENGTH } from "./values.js";

/*
 * Which backends an agent may change (`manage:` in its config, `--manage` on the command
 * line), so that a mapping typo on the controller cannot take over a backend an operator wrote
 * by hand. A pattern is a backend name, or one where `*` stands for any run of characters,
 * none included: `be_app`, `be_web_*`, `*`. Nothing else is special: names may hold only
 * letters, digits, `.`, `_` and `-`, so any other character (`?`, `[`, a space) is refused
 * rather than read as a regex or a wider glob that would then silently match nothing.
 * Matching is case-sensitive, as HAProxy's names are.
 */

const PATTERN_CHARACTERS = /^[A-Za-z0-9._*-]*$/;
const NOT_A_PATTERN_CHARACTER = /[^A-Za-z0-9._*-]/;

/** Why `pattern` could never match a backend name hafleet can manage, or null when it can. */
export function patternProblem(pattern: string): string | null {
  if (pattern === "") return "must not be empty: give a backend name, or a pattern such as be_web_* ('*' alone: every backend)";
  if (!PATTERN_CHARACTERS.test(pattern)) {
    const character = NOT_A_PATTERN_CHARACTER.exec(pattern)![0];
    return `matches no backend: names hold only letters, digits, '.', '_' and '-', never ${JSON.stringify(character)} ('*' is the only wildcard)`;
  }
  const fixed = pattern.replaceAll("*", "").length;
  if (fixed > NAME_MAX_LENGTH) return `matches no backend: it needs ${fixed} characters besides '*', and a backend name has at most ${NAME_MAX_LENGTH}`;
  return null;
}

export const managePatternSchema = z.string({ error: "must be a backend name or pattern (a string)" }).superRefine((pattern, ctx) => {
  const problem = patternProblem(pattern);
  if (problem !== null) ctx.addIssue({ code: "custom", message: problem, input: pattern });
});

// An empty list would nack every push: far more likely a template that rendered nothing than
// a wish, so it is refused, and "every backend" has to be said as '*'.
export const manageListSchema = z
  .array(managePatternSchema, { error: "must be a list of backend names or patterns" })
  .min(1, "must list at least one backend name or pattern ('*': every backend)");

/** The rule, compiled once; `manages` runs per backend of every push and hello. */
export interface ManagedBackends {
  /** The patterns as given; null: no list was given, and every backend is managed. */
  readonly patterns: readonly string[] | null;
  manages(backend: string): boolean;
}

/** No list: every backend, which is what an agent did before lists existed. */
export const EVERY_BACKEND: ManagedBackends = { patterns: null, manages: () => true };

/** Compiles valid patterns (checked at the boundary with `patternProblem`); absent: every backend. */
export function managedBackends(patterns: readonly string[] | undefined): ManagedBackends {
  if (patterns === undefined) return EVERY_BACKEND;
  const exact = new Set(patterns.filter((pattern) => !pattern.includes("*")));
  const globs = patterns.filter((pattern) => pattern.includes("*")).map((pattern) => pattern.split("*"));
  const manages = (backend: string): boolean => exact.has(backend) || globs.some((parts) => globMatches(parts, backend));
  return { patterns: [...patterns], manages };
}

/**
 * `parts` is a pattern split at its `*`s. The first part must start the name, the last end it,
 * and the ones between come in order without overlapping; taking each middle part at its
 * leftmost place is then always right (and linear: no backtracking on a hostile name).
 */
function globMatches(parts: readonly string[], name: string): boolean {
  const head = parts[0]!;
  const tail = parts[parts.length - 1]!;
  if (name.length < head.length + tail.length || !name.startsWith(head) || !name.endsWith(tail)) return false;
  const end = name.length - tail.length;
  let at = head.length;
  for (const part of parts.slice(1, -1)) {
    const found = name.indexOf(part, at);
    if (found === -1 || found + part.length > end) return false;
    at = found + part.length;
  }
  return true;
}

/** The nack of a backend outside the list: it names the list, so the fix is obvious on either side. */
export function notManagedReason(managed: ManagedBackends): string {
  return `not managed on this host (manage: ${managed.patterns === null ? "*" : managed.patterns.join(", ")})`;
}

/** Splits items named by backend into those the rule manages and the rest, each in order. */
export function partitionManaged<T extends { name: string }>(items: readonly T[], managed: ManagedBackends): { managed: T[]; unmanaged: T[] } {
  const result = { managed: [] as T[], unmanaged: [] as T[] };
  for (const item of items) (managed.manages(item.name) ? result.managed : result.unmanaged).push(item);
  return result;
}

/** A desired-state file's backends outside the rule, one issue each, at `backends[i].name`. */
export function unmanagedIssues(backends: ReadonlyArray<{ name: string }>, managed: ManagedBackends): InputIssue[] {
  return backends.flatMap((backend, index) => (managed.manages(backend.name) ? [] : [{ path: `backends[${index}].name`, message: notManagedReason(managed), value: backend.name }]));
}

/** `--manage` flags: none given is every backend; each invalid one is an issue naming the flag. */
export function manageFlagIssues(texts: readonly string[]): InputIssue[] {
  return texts.flatMap((text) => {
    const problem = patternProblem(text);
    return problem === null ? [] : [{ path: "--manage", message: problem, value: text }];
  });
}
