import { describe, expect, it } from "vitest";
import { nestingDepth } from "../../agent/config/config-file.js";
import { InvalidInputError } from "../../agent/errors.js";
import { parseControllerConfigText } from "../../controller/config/load-config.js";
import { caught } from "../support/helpers.js";

describe("config files: what the parser never sees", () => {
  it.each([
    ["a block sequence nested on one line", "- ".repeat(1_000) + "x"],
    ["flow brackets", "[".repeat(1_000) + "]".repeat(1_000)],
    ["flow maps", "a: " + "{b: ".repeat(500) + "1" + "}".repeat(500)],
  ])("refuses %s nested past 64 levels, with a clear error, every time", (_, text) => {
    // Twice: yaml's parser overflowed the stack on the first and crashed V8 on the second.
    for (let pass = 0; pass < 2; pass++) {
      const error = caught(() => parseControllerConfigText(text, "yaml", "deep.yaml"));
      expect(error).toBeInstanceOf(InvalidInputError);
      expect((error as InvalidInputError).issues[0]!.message).toMatch(/^nested \d+ levels deep, more than the 64 any config needs$/);
    }
    expect(() => parseControllerConfigText(text, "json", "deep.json")).toThrow(InvalidInputError);
  });

  it("counts nesting, not brackets inside quotes or comments", () => {
    expect(nestingDepth("backends:\n  - { backend: be_app, service: web }\n")).toBe(3);
    expect(nestingDepth(`a: "${"[".repeat(200)}"\nb: '{{{{'\n# [[[[[[[[\n`)).toBe(0);
  });

  it("never echoes a Consul token, even in an issue about the whole block that holds it", () => {
    const text = 'discovery:\n  consul: { address: "http://127.0.0.1:8500", token: "s3cr3t-token" }\n  file: catalog.json\nbackends:\n  - { backend: be_app, service: web }\n';
    const error = caught(() => parseControllerConfigText(text, "yaml", "c.yaml")) as InvalidInputError;
    expect(error).toBeInstanceOf(InvalidInputError);
    expect(error.issues[0]!.message).toContain("must have exactly one of consul, file");
    expect(JSON.stringify(error.issues) + error.message).not.toContain("s3cr3t-token");
  });
});
