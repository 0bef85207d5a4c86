import { describe, expect, it } from "vitest";
import type { InputIssue } from "../../agent/errors.js";
import { parseWith } from "../../agent/model/validate.js";
import { rolloutConfigSchema } from "../../controller/rollout/rollout-config.js";
import { expectInvalid } from "../support/helpers.js";

const SOURCE = "rollout";

function parse(input: unknown): unknown {
  return parseWith(rolloutConfigSchema, input, SOURCE);
}

const DEFAULTS = { canary: { count: 1 }, waves: [0.1, 0.25, 0.5, 1], bakeMs: 30_000, waveTimeoutMs: 120_000, autoRollback: true, maxServingDrop: 0.1, stageConfigChanges: true };
const SHARE = "must be more than 0 and at most 1";
const LABEL = "must be 1 to 63 letters, digits, '.', '_' or '-'";

describe("rolloutConfigSchema", () => {
  it("gives every field a default", () => {
    expect(parse({})).toEqual(DEFAULTS);
  });

  it.each([
    [{ canary: { count: 5 } }, { canary: { count: 5 } }],
    [{ canary: { share: 0.05 } }, { canary: { share: 0.05 } }],
    [{ canary: { share: 1 } }, { canary: { share: 1 } }],
    [{ canarySelector: { region: "eu-west-1", "tier.name": "edge_1" } }, { canarySelector: { region: "eu-west-1", "tier.name": "edge_1" } }],
    [{ waves: [1] }, { waves: [1] }],
    [{ waves: [0.01, 0.5, 1] }, { waves: [0.01, 0.5, 1] }],
    [{ bakeMs: "5s", waveTimeoutMs: "2m" }, { bakeMs: 5000, waveTimeoutMs: 120_000 }],
    [{ bakeMs: 1 }, { bakeMs: 1 }],
    [{ autoRollback: false }, { autoRollback: false }],
    [{ maxServingDrop: 0 }, { maxServingDrop: 0 }],
    [{ maxServingDrop: 1 }, { maxServingDrop: 1 }],
  ])("takes %j", (input, expected) => {
    expect(parse(input)).toEqual({ ...DEFAULTS, ...expected });
  });

  it.each<[string, unknown, InputIssue[]]>([
    ["an empty canary", { canary: {} }, [{ path: "canary", message: "must have exactly one of count, share", value: {} }]],
    ["both canary sizes", { canary: { count: 1, share: 0.5 } }, [{ path: "canary", message: "must have exactly one of count, share", value: { count: 1, share: 0.5 } }]],
    ["a canary of 0", { canary: { count: 0 } }, [{ path: "canary.count", message: "must be at least 1", value: 0 }]],
    ["a fractional count", { canary: { count: 1.5 } }, [{ path: "canary.count", message: "must be a whole number", value: 1.5 }]],
    ["a count as text", { canary: { count: "2" } }, [{ path: "canary.count", message: "must be a number", value: "2" }]],
    ["a canary share of 0", { canary: { share: 0 } }, [{ path: "canary.share", message: SHARE, value: 0 }]],
    ["a canary share over 1", { canary: { share: 1.5 } }, [{ path: "canary.share", message: SHARE, value: 1.5 }]],
    [
      "an unknown canary field",
      { canary: { percent: 5 } },
      [
        { path: "canary", message: "unknown field(s) percent" },
        { path: "canary", message: "must have exactly one of count, share", value: { percent: 5 } },
      ],
    ],
    ["no waves", { waves: [] }, [{ path: "waves", message: "must list at least one wave", value: [] }]],
    ["waves that are not a list", { waves: "all" }, [{ path: "waves", message: "must be a list of cumulative shares, like [0.1, 0.5, 1]", value: "all" }]],
    ["a wave of 0", { waves: [0, 1] }, [{ path: "waves[0]", message: SHARE, value: 0 }]],
    ["a wave as text", { waves: [0.5, "x", 1] }, [{ path: "waves[1]", message: "must be a number", value: "x" }]],
    ["a shrinking wave", { waves: [0.5, 0.4, 1] }, [{ path: "waves[1]", message: "must be more than the wave before it (0.5): shares are cumulative", value: 0.4 }]],
    ["a repeated wave", { waves: [0.5, 0.5, 1] }, [{ path: "waves[1]", message: "must be more than the wave before it (0.5): shares are cumulative", value: 0.5 }]],
    ["a last wave short of 1", { waves: [0.5, 0.9] }, [{ path: "waves[1]", message: "the last wave must be 1, or some agents never get the change", value: 0.9 }]],
    [
      "every wave problem at once",
      { waves: [1.2, 0.5] },
      [
        { path: "waves[0]", message: SHARE, value: 1.2 },
        { path: "waves[1]", message: "must be more than the wave before it (1.2): shares are cumulative", value: 0.5 },
        { path: "waves[1]", message: "the last wave must be 1, or some agents never get the change", value: 0.5 },
      ],
    ],
    ["a bake that is no duration", { bakeMs: "soon" }, [{ path: "bakeMs", message: "must be a duration: milliseconds, or a string like 500ms, 5s or 2m", value: "soon" }]],
    ["a wave timeout of 0", { waveTimeoutMs: 0 }, [{ path: "waveTimeoutMs", message: "must be at least 1 ms", value: 0 }]],
    ["autoRollback as text", { autoRollback: "yes" }, [{ path: "autoRollback", message: "must be true or false", value: "yes" }]],
    ["a serving drop over 1", { maxServingDrop: 1.5 }, [{ path: "maxServingDrop", message: "must be between 0 and 1", value: 1.5 }]],
    ["a negative serving drop", { maxServingDrop: -0.1 }, [{ path: "maxServingDrop", message: "must be between 0 and 1", value: -0.1 }]],
    ["a bad selector label name", { canarySelector: { "bad key!": "x" } }, [{ path: "canarySelector.bad key!", message: `label names ${LABEL}`, value: "x" }]],
    ["a bad selector label value", { canarySelector: { region: "eu west" } }, [{ path: "canarySelector.region", message: LABEL, value: "eu west" }]],
    ["a selector value that is no string", { canarySelector: { region: 3 } }, [{ path: "canarySelector.region", message: "must be a string", value: 3 }]],
    ["an unknown field", { canaries: 1 }, [{ path: "", message: "unknown field(s) canaries" }]],
  ])("refuses %s, naming the field", (_name, input, issues) => {
    expectInvalid(() => void parse(input), issues, SOURCE);
  });
});
