import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { InvalidInputError } from "../../agent/errors.js";
import { parseDesiredState, parseDesiredStateJson, type DesiredState } from "../../agent/model/desired-state.js";
import { expectIssues, expectName, expectServable, garbage, mutatedJson, mutatedText, outcome } from "./support.js";

/*
 * The desired state, from a file (`apply --desired`) or the agent's own store: refused with
 * InvalidInputError naming each issue, or made only of values the Runtime API may take.
 */

/** The README's example, with the edges of every range. */
const VALID = {
  version: "2026-11-24.1",
  backends: [
    {
      name: "be_app",
      servers: [
        { address: "10.0.0.5", port: 8080, weight: 100 },
        { address: "2001:db8::7", port: 8080 },
        { address: "10.0.0.6", port: 1, weight: 0 },
        { address: "10.0.0.7", port: 65535, weight: 256 },
      ],
    },
    { name: "be.static-2", servers: [] },
  ],
};

function expectValidState(state: DesiredState): void {
  expect(new Set(state.backends.map((backend) => backend.name)).size).toBe(state.backends.length);
  for (const backend of state.backends) {
    expectName(backend.name);
    expectServable(backend.servers);
  }
}

function judge(parse: () => DesiredState): void {
  const result = outcome(parse, InvalidInputError);
  if (result.ok) expectValidState(result.value);
  else expectIssues(result.error as InvalidInputError);
}

describe("parseDesiredState", () => {
  it("refuses any JSON value with named issues, or gives a servable state", () => {
    const input = fc.oneof(fc.jsonValue({ maxDepth: 5 }), fc.record({ backends: fc.jsonValue({ maxDepth: 4 }) }));
    fc.assert(
      fc.property(input, (value) => judge(() => parseDesiredState(value, "fuzz"))),
      { seed: 0xde51, numRuns: 500 },
    );
  });

  it("refuses mutations of a valid state (hostile, duplicated, dropped values) with named issues, or gives a servable state", () => {
    fc.assert(
      fc.property(mutatedJson(VALID), (value) => judge(() => parseDesiredState(value, "fuzz"))),
      { seed: 0xde52, numRuns: 500 },
    );
  });
});

describe("parseDesiredStateJson", () => {
  it("refuses any text, and mutations of a valid file's text, with named issues, or gives a servable state", () => {
    const text = fc.oneof(garbage(JSON.stringify(VALID)), mutatedText(fc.constant(JSON.stringify(VALID, null, 2))));
    fc.assert(
      fc.property(text, (value) => judge(() => parseDesiredStateJson(value, "fuzz"))),
      { seed: 0xde53, numRuns: 500 },
    );
  });
});
