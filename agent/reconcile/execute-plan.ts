import { assertBatchOrder } from "../runtime/batch-order.js";
import type { RuntimeCommand } from "../runtime/commands.js";
import type { CommandReply, FailureReason } from "../runtime/reply.js";
import type { CommandRunner } from "../runtime/runtime-client.js";
import type { PlanStep, StepAction } from "./planner.js";

export type StepOutcome =
  | { step: PlanStep; ok: true }
  | { step: PlanStep; ok: false; command: string; reply: string; reason: FailureReason }
  | { step: PlanStep; ok: false; skipped: "placement-failed" };

const REMOVALS = new Set<StepAction>(["drain", "maint", "delete"]);

/**
 * Runs a plan in two pipelined batches: every step's `prepare` commands, then the `commit`
 * commands of the steps whose preparation succeeded. A backend where any new server could
 * not be placed keeps its old servers this time (make before break). The commit batch is sent
 * only once every prepare reply is back, which is what lets a `state ready` follow the address
 * it depends on: HAProxy 2.9+ applies an address change after answering (see batch-order.ts),
 * so within one batch that order is refused before anything is sent.
 */
export async function executePlan(client: CommandRunner, steps: readonly PlanStep[]): Promise<StepOutcome[]> {
  const failures = new Map<PlanStep, StepOutcome>();
  await runPhase(client, steps, (step) => step.prepare, failures);

  const placementFailed = new Set<string>();
  for (const step of failures.keys()) placementFailed.add(step.backend);
  const committing: PlanStep[] = [];
  for (const step of steps) {
    if (failures.has(step)) continue;
    if (REMOVALS.has(step.action) && placementFailed.has(step.backend)) failures.set(step, { step, ok: false, skipped: "placement-failed" });
    else committing.push(step);
  }
  await runPhase(client, committing, (step) => step.commit, failures);
  return steps.map((step) => failures.get(step) ?? { step, ok: true });
}

export function isDynamicRefusal(outcome: StepOutcome): boolean {
  return !outcome.ok && "reason" in outcome && outcome.reason === "dynamic-servers-refused";
}

async function runPhase(client: CommandRunner, steps: readonly PlanStep[], commandsOf: (step: PlanStep) => RuntimeCommand[], failures: Map<PlanStep, StepOutcome>): Promise<void> {
  const owners: PlanStep[] = [];
  const commands: RuntimeCommand[] = [];
  for (const step of steps) {
    for (const command of commandsOf(step)) {
      owners.push(step);
      commands.push(command);
    }
  }
  assertBatchOrder(commands);
  const replies: CommandReply[] = await client.run(commands);
  replies.forEach((reply, index) => {
    const step = owners[index]!;
    if (!reply.ok && !failures.has(step)) failures.set(step, { step, ok: false, command: reply.command.text, reply: reply.text, reason: reply.reason });
  });
}
