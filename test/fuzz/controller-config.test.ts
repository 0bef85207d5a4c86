import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { InvalidInputError } from "../../agent/errors.js";
import { parseControllerConfigText, type ConfigFormat } from "../../controller/config/load-config.js";
import { controllerConfigSchema, type ControllerConfig } from "../../controller/config/controller-config.js";
import { expectIssues, expectName, garbage, mutatedJson, mutatedText, outcome } from "./support.js";

/*
 * The controller's configuration file, YAML or JSON: refused with InvalidInputError, every
 * issue naming a field path and a message, or a configuration the schema holds to be valid.
 *
 * Texts stay short: nesting ~1,000 deep (`- - - ...`, `[[[...`) overflows the yaml parser's
 * stack, and a second such parse in the same process aborts it (V8 fatal OOM, exit 134); until the
 * config loader bounds the depth before parsing, no generator here nests deep.
 */

const README_YAML = /```yaml\n([\s\S]*?)```/.exec(readFileSync(new URL("../../README.md", import.meta.url), "utf8"))?.[1] ?? "";
const README_VALUE: unknown = parseYaml(README_YAML);

function judge(text: string, format: ConfigFormat): void {
  const result = outcome(() => parseControllerConfigText(text, format, "fuzz"), InvalidInputError);
  if (!result.ok) {
    const error = result.error as InvalidInputError;
    expectIssues(error);
    // The README promises that every error names its line.
    for (const issue of error.issues) expect(issue.message).toMatch(/^line \d+:\d+: /);
    return;
  }
  const config: ControllerConfig = result.value;
  // What comes out is a fixed point: defaults filled, durations in ms, nothing left to refuse.
  expect(controllerConfigSchema.parse(config)).toEqual(config);
  for (const mapping of config.backends) expectName(mapping.backend);
}

const format = fc.constantFrom<ConfigFormat>("yaml", "json");

describe("parseControllerConfigText", () => {
  it("refuses any text with located issues, or gives a valid configuration", () => {
    fc.assert(
      fc.property(garbage(README_YAML + JSON.stringify(README_VALUE), 300), format, judge),
      { seed: 0xc0f1, numRuns: 300 },
    );
  });

  it("refuses mutations of the README's example text (lines dropped, doubled, swapped; values hostile) the same way", () => {
    fc.assert(fc.property(mutatedText(fc.constant(README_YAML)), (text) => judge(text, "yaml")), { seed: 0xc0f2, numRuns: 300 });
  });

  it("refuses mutations of the README's example as data, written as YAML or JSON, the same way", () => {
    const documents = fc.tuple(mutatedJson(README_VALUE, 3), format).map(([value, kind]) => ({ kind, text: kind === "json" ? (JSON.stringify(value) ?? "") : stringifyYaml(value) }));
    fc.assert(fc.property(documents, ({ kind, text }) => judge(text, kind)), { seed: 0xc0f3, numRuns: 300 });
  });
});
