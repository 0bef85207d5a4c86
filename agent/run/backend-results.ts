import type { Name } from "../model/values.js";
import type { StepOutcome } from "../reconcile/execute-plan.js";
import type { StepAction, UnplacedReason } from "../reconcile/planner.js";
import type { SocketReport } from "../reconcile/reconciler.js";
import { LIMITS, type BackendResult } from "../../proto/messages.js";
import type { SocketApply } from "./applier.js";

/**
 * From what every socket reported to one verdict per backend: "" when the backend runs its
 * desired servers everywhere (drains still running included: they end on their own), or why
 * not, naming the socket, so an operator reading a nack knows where to look.
 */

/** Follow-ups of a drain already under way: pending, they do not make a backend wrong. */
const DRAIN_FOLLOW_UPS = new Set<StepAction>(["maint", "delete"]);

const UNPLACED_TEXT: Record<UnplacedReason, string> = {
  "backend-missing": "the backend does not exist in this HAProxy",
  "no-free-slot": "every slot is taken and the backend takes no dynamic servers",
  "empty-refused": "an empty server list is refused for a backend that serves traffic (allow_empty is off)",
};

/** Shown per socket before the rest is summarised as a count. */
const MAX_LISTED = 5;

/** backend -> why it does not run its desired state; backends that do are absent. */
export function backendFailures(backends: Iterable<string>, sockets: readonly SocketApply[]): Map<string, string> {
  const failures = new Map<string, string>();
  for (const backend of backends) {
    const problems = sockets.flatMap((socket) => ("error" in socket ? [`${socket.socket}: ${socket.error}`] : socketProblems(backend, socket)));
    if (problems.length > 0) failures.set(backend, truncate(problems.join("; ")));
  }
  return failures;
}

function socketProblems(backend: string, report: SocketReport): string[] {
  const problems: string[] = [];
  const refused = report.outcomes.filter((outcome): outcome is Refusal => outcome.step.backend === backend && isRefusal(outcome));
  if (refused.length > 0) {
    const listed = refused.slice(0, MAX_LISTED).map((outcome) => `'${outcome.command}' -> ${JSON.stringify(outcome.reply.trim())}`);
    problems.push(`${report.socket}: HAProxy refused ${listed.join(", ")}${more(refused.length)}`);
  }
  const plan = report.final.backends.find((entry) => entry.backend === backend);
  const byReason = new Map<UnplacedReason, string[]>();
  for (const unplaced of plan?.unplaced ?? []) byReason.set(unplaced.reason, [...(byReason.get(unplaced.reason) ?? []), unplaced.endpoint]);
  for (const [reason, endpoints] of byReason) {
    const which = reason === "empty-refused" ? "" : ` (${endpoints.length} server(s) not placed: ${endpoints.slice(0, MAX_LISTED).join(", ")}${more(endpoints.length)})`;
    problems.push(`${report.socket}: ${reason}: ${UNPLACED_TEXT[reason]}${which}`);
  }
  const pending = report.final.steps.filter((step) => step.backend === backend && !DRAIN_FOLLOW_UPS.has(step.action));
  if (pending.length > 0 && refused.length === 0) {
    const listed = pending.slice(0, MAX_LISTED).map((step) => `${step.action} ${step.server}`);
    problems.push(`${report.socket}: ${pending.length} change(s) still pending: ${listed.join(", ")}${more(pending.length)}`);
  }
  return problems;
}

type Refusal = Extract<StepOutcome, { reason: unknown }>;

/** A refused `add server` is not one: the planner then reports the server as not placed. */
function isRefusal(outcome: StepOutcome): outcome is Refusal {
  return !outcome.ok && "reason" in outcome && outcome.reason !== "dynamic-servers-refused";
}

function more(count: number): string {
  return count > MAX_LISTED ? ` and ${count - MAX_LISTED} more` : "";
}

function truncate(text: string): string {
  return text.length <= LIMITS.text ? text : `${text.slice(0, LIMITS.text - 1)}…`;
}

/**
 * One result per pushed backend. `appliedVersion` is what the store says after this apply:
 * the pushed version when it succeeded now, else the version that last did.
 */
export function backendResults(
  pushed: ReadonlyArray<{ name: Name; version: string }>,
  failures: ReadonlyMap<string, string>,
  appliedVersionOf: (backend: string) => string,
): BackendResult[] {
  return pushed.map(({ name, version }) => {
    const error = failures.get(name) ?? "";
    return { backend: name, version, error, appliedVersion: error === "" ? version : appliedVersionOf(name) };
  });
}

/** The same nack for every backend of a push that was not applied at all. */
export function refusedResults(
  pushed: ReadonlyArray<{ name: Name; version: string }>,
  error: string,
  appliedVersionOf: (backend: string) => string,
): BackendResult[] {
  return backendResults(pushed, new Map(pushed.map(({ name }) => [name, truncate(error)])), appliedVersionOf);
}
