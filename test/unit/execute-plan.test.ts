import { describe, expect, it } from "vitest";
import { executePlan } from "../../agent/reconcile/execute-plan.js";
import type { PlanStep, StepAction } from "../../agent/reconcile/planner.js";
import { RuntimeCommand } from "../../agent/runtime/commands.js";
import { classifyReply, type CommandReply } from "../../agent/runtime/reply.js";
import type { CommandRunner } from "../../agent/runtime/runtime-client.js";
import { nameSchema } from "../../agent/model/values.js";

/** Answers like HAProxy, except for the commands given a scripted refusal; records batches. */
function scriptedHaproxy(refusals: Record<string, string>) {
  const batches: string[][] = [];
  const runner: CommandRunner = {
    run: async (commands: readonly RuntimeCommand[]): Promise<CommandReply[]> => {
      batches.push(commands.map((command) => command.text));
      return commands.map((command) => classifyReply(command, refusals[command.text] ?? successText(command)));
    },
  };
  return { runner, batches };
}

function successText(command: RuntimeCommand): string {
  if (command.kind === "add-server") return "New server registered.";
  if (command.kind === "del-server") return "Server deleted.";
  return "";
}

function step(action: StepAction, backend: string, server: string, prepare: string[], commit: string[]): PlanStep {
  const b = nameSchema.parse(backend);
  const s = nameSchema.parse(server);
  const build = (text: string) => (text === "ready" ? RuntimeCommand.setState(b, s, "ready") : text === "drain" ? RuntimeCommand.setState(b, s, "drain") : RuntimeCommand.deleteServer(b, s));
  return { action, backend: b, server: s, endpoint: null, prepare: prepare.map(build), commit: commit.map(build), ledger: undefined };
}

describe("executing a plan", () => {
  it("runs every prepare command in one batch, then every commit command in a second", async () => {
    const { runner, batches } = scriptedHaproxy({});
    const steps = [step("fill-slot", "be", "a", ["ready"], ["ready"]), step("drain", "be", "b", [], ["drain"])];
    const outcomes = await executePlan(runner, steps);
    expect(outcomes.every((outcome) => outcome.ok)).toBe(true);
    expect(batches).toEqual([["set server be/a state ready"], ["set server be/a state ready", "set server be/b state drain"]]);
  });

  it("does not commit a step whose preparation was refused, and reports the command and reply", async () => {
    const { runner, batches } = scriptedHaproxy({ "del server be/a": "No such server." });
    const outcomes = await executePlan(runner, [step("fill-slot", "be", "a", ["del"], ["ready"]), step("fill-slot", "be", "c", ["ready"], ["ready"])]);
    expect(batches[1]).toEqual(["set server be/c state ready"]);
    expect(outcomes[0]).toEqual({ step: expect.anything(), ok: false, command: "del server be/a", reply: "No such server.", reason: "no-such-server" });
    expect(outcomes[1]!.ok).toBe(true);
  });

  it("holds the removals of a backend where a new server could not be placed, and only there", async () => {
    const { runner, batches } = scriptedHaproxy({ "del server be/a": "Backend must use a dynamic load balancing to support dynamic servers." });
    const outcomes = await executePlan(runner, [
      step("add-server", "be", "a", ["del"], ["ready"]),
      step("drain", "be", "old", [], ["drain"]),
      step("drain", "other", "old", [], ["drain"]),
    ]);
    expect(batches[1]).toEqual(["set server other/old state drain"]);
    expect(outcomes.map((outcome) => (outcome.ok ? "ok" : "skipped" in outcome ? outcome.skipped : outcome.reason))).toEqual(["dynamic-servers-refused", "placement-failed", "ok"]);
  });

  it("reports a refusal in the commit batch against its own step", async () => {
    const { runner } = scriptedHaproxy({ "set server be/b state drain": "No such server." });
    const outcomes = await executePlan(runner, [step("drain", "be", "a", [], ["drain"]), step("drain", "be", "b", [], ["drain"]), step("drain", "be", "c", [], ["drain"])]);
    expect(outcomes.map((outcome) => outcome.ok)).toEqual([true, false, true]);
  });
});
