import { describe, expect, it } from "vitest";
import { addressSchema, nameSchema, portSchema, weightSchema } from "../../agent/model/values.js";
import { executePlan } from "../../agent/reconcile/execute-plan.js";
import { assertBatchOrder, BatchOrderError, batchOrderViolation } from "../../agent/runtime/batch-order.js";
import { RuntimeCommand } from "../../agent/runtime/commands.js";
import { classifyReply, type CommandReply } from "../../agent/runtime/reply.js";
import type { CommandRunner } from "../../agent/runtime/runtime-client.js";

const be = nameSchema.parse("be");
const a = nameSchema.parse("a");
const b = nameSchema.parse("b");
const ADDRESS = addressSchema.parse("10.0.0.1");
const PORT = portSchema.parse(8080);
const setAddr = (server = a) => RuntimeCommand.setAddress(be, server, ADDRESS, PORT);
const ready = (server = a) => RuntimeCommand.setState(be, server, "ready");
const weight = (server = a) => RuntimeCommand.setWeight(be, server, weightSchema.parse(5));
const read = () => RuntimeCommand.showServersState();

describe("what may share one pipelined batch (address changes apply later since 2.9)", () => {
  it.each([
    ["reads only", [RuntimeCommand.showBackend(), read(), RuntimeCommand.showStat("backends")]],
    ["reads, then writes", [read(), setAddr(), weight()]],
    ["an address change and a weight for the same server", [setAddr(), weight()]],
    ["an address change, and the state of another server", [setAddr(a), ready(b)]],
    ["states and weights after each other", [weight(), ready(), RuntimeCommand.setState(be, a, "drain")]],
    ["an empty batch", []],
  ])("allows %s", (_name, commands) => {
    expect(batchOrderViolation(commands)).toBeNull();
    expect(() => assertBatchOrder(commands)).not.toThrow();
  });

  it.each([
    ["a read after a write", [ready(), read()], 1, "reads after the write 'set server be/a state ready'"],
    ["a read anywhere after a write", [read(), setAddr(), weight(b), RuntimeCommand.showInfo()], 3, "reads after the write 'set server be/a addr 10.0.0.1 port 8080'"],
    ["'state ready' after the address change it depends on", [setAddr(), weight(), ready()], 2, "depends on the address change 'set server be/a addr 10.0.0.1 port 8080'"],
    ["'enable health' after an address change", [setAddr(), RuntimeCommand.enableHealth(be, a)], 1, "depends on the address change"],
    ["'del server' after an address change", [setAddr(), RuntimeCommand.deleteServer(be, a)], 1, "depends on the address change"],
    ["a second address change", [setAddr(), setAddr()], 1, "depends on the address change"],
  ])("refuses %s, naming both commands", (_name, commands, index, fragment) => {
    const violation = batchOrderViolation(commands);
    expect(violation).toBeInstanceOf(BatchOrderError);
    expect(violation).toMatchObject({ index, code: "HAFLEET_BATCH_ORDER" });
    expect(violation!.message).toContain(fragment);
    expect(() => assertBatchOrder(commands)).toThrow(BatchOrderError);
  });
});

describe("the executor keeps to it", () => {
  /** Fails the test on any batch that breaks the rule, as the connection would refuse it. */
  const runner: CommandRunner = {
    run: async (commands: readonly RuntimeCommand[]): Promise<CommandReply[]> => {
      assertBatchOrder(commands);
      return commands.map((command) => classifyReply(command, command.kind === "set-addr" ? "nothing changed" : command.kind === "add-server" ? "New server registered." : command.kind === "del-server" ? "Server deleted." : ""));
    },
  };

  it("puts each slot's address and its 'state ready' in two batches", async () => {
    const batches: string[][] = [];
    const recording: CommandRunner = {
      run: (commands) => {
        batches.push(commands.map((command) => command.text));
        return runner.run(commands);
      },
    };
    const step = { action: "fill-slot" as const, backend: be, server: a, endpoint: null, prepare: [setAddr(), weight()], commit: [ready()], ledger: null };
    const outcomes = await executePlan(recording, [step, { ...step, server: b, prepare: [setAddr(b)], commit: [ready(b)] }]);
    expect(outcomes.every((outcome) => outcome.ok)).toBe(true);
    expect(batches).toEqual([
      ["set server be/a addr 10.0.0.1 port 8080", "set server be/a weight 5", "set server be/b addr 10.0.0.1 port 8080"],
      ["set server be/a state ready", "set server be/b state ready"],
    ]);
  });

  it("refuses, before sending anything, a plan whose prepare commands depend on each other", async () => {
    let sent = 0;
    const counting: CommandRunner = { run: (commands) => ((sent += commands.length), runner.run(commands)) };
    const broken = { action: "fill-slot" as const, backend: be, server: a, endpoint: null, prepare: [setAddr(), ready()], commit: [], ledger: null };
    await expect(executePlan(counting, [broken])).rejects.toBeInstanceOf(BatchOrderError);
    expect(sent).toBe(0);
  });
});
