import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { addressSchema, nameSchema, portSchema, weightSchema, type Address, type Name, type Port, type Weight } from "../../agent/model/values.js";
import { RuntimeCommand, type AdminTarget } from "../../agent/runtime/commands.js";
import { hostileValue, outcome } from "./support.js";

/*
 * HAProxy's CLI runs a second command after `;` or a newline and takes a space as the end of an
 * argument. Whatever string reaches a builder (the branded types can be cast), it either refuses
 * it or builds a command whose every argument is one clean word, in the expected number, and in
 * its grammar: a name, an IP literal, a decimal integer (HAProxy reads `1e3` as 1, `80.5` as 80).
 */

/** A character that would end an argument or the command if it were inside one. */
const SPLITTING = /[;\n\r\0 \t]/;

/** The grammar of every argument a value may fill: a name, an IP literal, a decimal integer. */
const N = "[A-Za-z0-9._-]{1,64}";
const A = "[0-9A-Fa-f:.]{2,45}";
const I = "(?:0|[1-9][0-9]*)";
const shape = (pattern: string): RegExp => new RegExp(`^${pattern}$`);

/** Builds one command from raw values, as a careless caller might after casting them. */
interface Build {
  build: () => RuntimeCommand;
  /** How many space-separated arguments the command has when every value is one word. */
  words: number;
  /** The command's text, each value in its argument's grammar. */
  shape: RegExp;
  /** The values that the desired state's schemas accept, so that the builder must not refuse. */
  valid: boolean;
}

interface RawValues {
  backend: string;
  server: string;
  address: string;
  port: number;
  weight: number;
  state: string;
  /** A proxy id and a server id. */
  ids: [number, number];
  check: boolean;
}

function accepts(schema: { safeParse: (value: unknown) => { success: boolean; data?: unknown } }, value: unknown): boolean {
  const result = schema.safeParse(value);
  // Addresses are canonicalised: a builder gets the schema's output, never a variant of it.
  return result.success && result.data === value;
}

function builds(values: RawValues): Build[] {
  const backend = values.backend as Name;
  const server = values.server as Name;
  const address = values.address as Address;
  const port = values.port as Port;
  const weight = values.weight as Weight;
  const names = accepts(nameSchema, backend) && accepts(nameSchema, server);
  const endpoint = accepts(addressSchema, address) && accepts(portSchema, port);
  const weightOk = accepts(weightSchema, weight);
  const idsOk = values.ids.every((id) => Number.isInteger(id) && id >= 1 && id < 2 ** 31);
  const check = values.check ? " check" : "";
  return [
    { build: () => RuntimeCommand.setAddress(backend, server, address, port), words: 7, shape: shape(`set server ${N}/${N} addr ${A} port ${I}`), valid: names && endpoint },
    { build: () => RuntimeCommand.setWeight(backend, server, weight), words: 5, shape: shape(`set server ${N}/${N} weight ${I}`), valid: names && weightOk },
    { build: () => RuntimeCommand.setState(backend, server, values.state as AdminTarget), words: 5, shape: shape(`set server ${N}/${N} state (?:ready|drain|maint)`), valid: names && ["ready", "drain", "maint"].includes(values.state) },
    {
      build: () => RuntimeCommand.addServer(backend, server, address, port, { weight, check: values.check }),
      words: 6 + (values.check ? 1 : 0),
      shape: shape(`add server ${N}/${N} (?:[0-9.]+|\\[${A}\\]):${I} weight ${I}${check}`),
      valid: names && endpoint && weightOk,
    },
    {
      build: () => RuntimeCommand.addServer(backend, server, address, port, { check: values.check }),
      words: 4 + (values.check ? 1 : 0),
      shape: shape(`add server ${N}/${N} (?:[0-9.]+|\\[${A}\\]):${I}${check}`),
      valid: names && endpoint,
    },
    { build: () => RuntimeCommand.deleteServer(backend, server), words: 3, shape: shape(`del server ${N}/${N}`), valid: names },
    { build: () => RuntimeCommand.enableHealth(backend, server), words: 3, shape: shape(`enable health ${N}/${N}`), valid: names },
    { build: () => RuntimeCommand.showServerStat(...values.ids), words: 5, shape: shape(`show stat ${I} 4 ${I}`), valid: idsOk },
  ];
}

const validName = fc.stringMatching(/^[A-Za-z0-9._-]{1,64}$/);
const validAddress = fc.oneof(fc.ipV4(), fc.ipV6()).map((text) => addressSchema.safeParse(text).data ?? "10.0.0.1");
const anyNumber = fc.oneof(fc.integer(), fc.integer({ min: -1, max: 65537 }), fc.double(), fc.constantFrom(0, 256, 257, 65535, 65536, 2 ** 31, Number.NaN, Infinity, -0, 1e3, 8080.5));

/** Values from every corner: valid ones (so that the builders are seen to build), hostile ones, and mixes. */
const rawValues: fc.Arbitrary<RawValues> = fc.record({
  backend: fc.oneof(validName, hostileValue),
  server: fc.oneof(validName, hostileValue),
  address: fc.oneof(validAddress, hostileValue, validAddress.map((address) => `${address} port 4444`), validAddress.map((address) => `${address};`)),
  port: fc.oneof(fc.integer({ min: 1, max: 65535 }), anyNumber),
  weight: fc.oneof(fc.integer({ min: 0, max: 256 }), anyNumber),
  state: fc.oneof(fc.constantFrom("ready", "drain", "maint"), hostileValue),
  ids: fc.tuple(fc.oneof(fc.integer({ min: 1, max: 2 ** 31 - 1 }), anyNumber), fc.oneof(fc.integer({ min: 1, max: 2 ** 31 - 1 }), anyNumber)),
  check: fc.boolean(),
});

describe("RuntimeCommand builders", () => {
  it("refuse a value, or build a command of clean single-word arguments; values the schemas accept are never refused", () => {
    let built = 0;
    fc.assert(
      fc.property(rawValues, (values) => {
        for (const { build, words, shape: grammar, valid } of builds(values)) {
          const result = outcome(build, Error);
          if (valid) expect(result.ok, `refused ${JSON.stringify(values)}: ${result.ok ? "" : result.error.message}`).toBe(true);
          if (!result.ok) continue;
          built += 1;
          const args = result.value.text.split(" ");
          expect(args, result.value.text).toHaveLength(words);
          for (const arg of args) expect(arg !== "" && !SPLITTING.test(arg), JSON.stringify(arg)).toBe(true);
          expect(result.value.text).toMatch(grammar);
        }
      }),
      { seed: 0xc0de, numRuns: 500 },
    );
    // The property says nothing if every value is refused.
    expect(built).toBeGreaterThan(500);
  });
});
