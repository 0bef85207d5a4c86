import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { agentConfigSchema, manageWarning } from "../../agent/config/agent-config.js";
import { checkConfigFile } from "../../agent/config/check-config-file.js";
import { parseConfigText } from "../../agent/config/config-file.js";
import { agentConfigFromFlags, loadAgentConfig, prepareAgent } from "../../agent/config/load-agent-config.js";
import {
  EVERY_BACKEND,
  manageFlagIssues,
  managedBackends,
  manageListSchema,
  notManagedReason,
  partitionManaged,
  patternProblem,
  unmanagedIssues,
} from "../../agent/model/manage-patterns.js";
import { asName } from "../../agent/model/values.js";
import { expectInvalid } from "../support/helpers.js";

const DEPLOY_CONFIG = new URL("../../deploy/config/", import.meta.url).pathname;

function matching(patterns: string[], names: string[]): string[] {
  const rule = managedBackends(patterns);
  return names.filter((name) => rule.manages(name));
}

describe("manage patterns: matching", () => {
  const names = ["be_app", "be_app_eu", "be_api", "be_web_1", "be_web_", "be_webx", "web_be", "BE_APP", "be_app.old", "a", ""];

  it.each<[string[], string[]]>([
    [["be_app"], ["be_app"]],
    [["be_app_eu", "a"], ["be_app_eu", "a"]],
    [["be_web_*"], ["be_web_1", "be_web_"]],
    [["*_eu"], ["be_app_eu"]],
    [["be_*_eu"], ["be_app_eu"]],
    [["*web*"], ["be_web_1", "be_web_", "be_webx", "web_be"]],
    [["be_app*"], ["be_app", "be_app_eu", "be_app.old"]],
    [["be_a*p*"], ["be_app", "be_app_eu", "be_api", "be_app.old"]],
    [["b**p"], ["be_app"]],
    [["*"], names],
    [["BE_*"], ["BE_APP"]],
    [["be.app"], []],
    [["be_app", "be_app*"], ["be_app", "be_app_eu", "be_app.old"]],
  ])("%j manages exactly %j", (patterns, expected) => {
    expect(matching(patterns, names)).toEqual(expected);
  });

  it("takes `*` for any run of characters, none included, and nothing else as special", () => {
    expect(matching(["a*a"], ["a", "aa", "aba", "abba", "ab"])).toEqual(["aa", "aba", "abba"]);
    expect(matching(["ab*ba"], ["aba", "abba", "abxba"])).toEqual(["abba", "abxba"]);
    // The head and the tail of a pattern must not share the name's characters.
    expect(matching(["aa*aa"], ["aaa", "aaaa", "aaaaa"])).toEqual(["aaaa", "aaaaa"]);
    expect(matching(["*a*b*c*"], ["abc", "xaybzc", "cba", "acb"])).toEqual(["abc", "xaybzc"]);
    // `.` and `-` are name characters, not regex or range syntax.
    expect(matching(["be.*"], ["be.x", "bex", "be_x"])).toEqual(["be.x"]);
  });

  it("agrees with a regex for any valid pattern and name", () => {
    const character = fc.constantFrom(..."ab._-*");
    fc.assert(
      fc.property(fc.string({ unit: character, minLength: 1, maxLength: 8 }), fc.string({ unit: fc.constantFrom(..."ab._-"), maxLength: 12 }), (pattern, name) => {
        const regex = new RegExp(`^${pattern.split("*").map((part) => part.replace(/[.]/g, "\\.")).join(".*")}$`);
        expect(managedBackends([pattern]).manages(name)).toBe(regex.test(name));
      }),
      { numRuns: 2_000 },
    );
  });

  it("stays linear on a hostile name", () => {
    const rule = managedBackends(["*a*a*a*a*a*a*a*a*b"]);
    const started = performance.now();
    for (let i = 0; i < 1_000; i++) expect(rule.manages("a".repeat(64))).toBe(false);
    expect(performance.now() - started).toBeLessThan(500);
  });

  it("manages every backend when no list is given", () => {
    expect(managedBackends(undefined)).toBe(EVERY_BACKEND);
    expect(EVERY_BACKEND.patterns).toBeNull();
    expect(["be_app", "x", "", "not a name"].every((name) => EVERY_BACKEND.manages(name))).toBe(true);
  });

  it("keeps its own copy of the patterns", () => {
    const patterns = ["be_app"];
    const rule = managedBackends(patterns);
    patterns.push("be_other");
    expect([rule.patterns, rule.manages("be_other")]).toEqual([["be_app"], false]);
  });
});

describe("manage patterns: validation", () => {
  it.each(["be_app", "*", "**", "be_*", "*_eu", "a.b-c_D9", "x".repeat(64), `${"x".repeat(64)}*`, `*${"x".repeat(32)}*${"y".repeat(32)}*`])("takes %j", (pattern) => {
    expect(patternProblem(pattern)).toBeNull();
    expect(manageListSchema.safeParse([pattern]).success).toBe(true);
  });

  it.each<[string, string]>([
    ["", "must not be empty: give a backend name, or a pattern such as be_web_* ('*' alone: every backend)"],
    ["be app", `matches no backend: names hold only letters, digits, '.', '_' and '-', never " " ('*' is the only wildcard)`],
    ["be_?", `matches no backend: names hold only letters, digits, '.', '_' and '-', never "?" ('*' is the only wildcard)`],
    ["be_[ab]", `matches no backend: names hold only letters, digits, '.', '_' and '-', never "[" ('*' is the only wildcard)`],
    ["be_app;show info", `matches no backend: names hold only letters, digits, '.', '_' and '-', never ";" ('*' is the only wildcard)`],
    ["^be_.*$", `matches no backend: names hold only letters, digits, '.', '_' and '-', never "^" ('*' is the only wildcard)`],
    ["bé", `matches no backend: names hold only letters, digits, '.', '_' and '-', never "é" ('*' is the only wildcard)`],
    ["be/app", `matches no backend: names hold only letters, digits, '.', '_' and '-', never "/" ('*' is the only wildcard)`],
    ["x".repeat(65), "matches no backend: it needs 65 characters besides '*', and a backend name has at most 64"],
    [`${"x".repeat(40)}*${"y".repeat(25)}`, "matches no backend: it needs 65 characters besides '*', and a backend name has at most 64"],
  ])("refuses %j", (pattern, message) => {
    expect(patternProblem(pattern)).toBe(message);
  });

  it("refuses a pattern whose fixed part is a valid name no longer than the limit, never one that can match", () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom(..."ab*._-"), minLength: 1, maxLength: 70 }), (pattern) => {
        const example = pattern.replaceAll("*", "");
        // A pattern is taken exactly when the name that fills every `*` with nothing is valid
        // (or the pattern is only stars, which any name matches).
        expect(patternProblem(pattern) === null).toBe(example === "" || asName(example) !== null);
      }),
    );
  });

  it("refuses an empty list, a list of non-strings, and a single string", () => {
    const issues = (input: unknown) => manageListSchema.safeParse(input).error?.issues.map((issue) => [issue.path.join("."), issue.message]);
    expect(issues([])).toEqual([["", "must list at least one backend name or pattern ('*': every backend)"]]);
    expect(issues(["be_app", 7])).toEqual([["1", "must be a backend name or pattern (a string)"]]);
    expect(issues("be_app")).toEqual([["", "must be a list of backend names or patterns"]]);
  });

  it("names each bad --manage flag with its value", () => {
    expect(manageFlagIssues([])).toEqual([]);
    expect(manageFlagIssues(["be_app", "be app", "be_*"])).toEqual([{ path: "--manage", message: expect.stringContaining('never " "'), value: "be app" }]);
  });
});

describe("manage patterns: the nack, the split, the refusal", () => {
  const rule = managedBackends(["be_app", "be_web_*"]);

  it("names the list in the nack", () => {
    expect(notManagedReason(rule)).toBe("not managed on this host (manage: be_app, be_web_*)");
    expect(notManagedReason(managedBackends(["*"]))).toBe("not managed on this host (manage: *)");
  });

  it("splits a push's backends in order", () => {
    const backends = [{ name: "be_web_2" }, { name: "be_hand" }, { name: "be_app" }, { name: "be_webx" }];
    expect(partitionManaged(backends, rule)).toEqual({ managed: [{ name: "be_web_2" }, { name: "be_app" }], unmanaged: [{ name: "be_hand" }, { name: "be_webx" }] });
    expect(partitionManaged(backends, EVERY_BACKEND)).toEqual({ managed: backends, unmanaged: [] });
    expect(partitionManaged([], rule)).toEqual({ managed: [], unmanaged: [] });
  });

  it("gives one issue per desired backend outside the list, at its path", () => {
    expect(unmanagedIssues([{ name: "be_app" }, { name: "be_hand" }, { name: "be_web_1" }, { name: "be_other" }], rule)).toEqual([
      { path: "backends[1].name", message: "not managed on this host (manage: be_app, be_web_*)", value: "be_hand" },
      { path: "backends[3].name", message: "not managed on this host (manage: be_app, be_web_*)", value: "be_other" },
    ]);
    expect(unmanagedIssues([{ name: "be_hand" }], EVERY_BACKEND)).toEqual([]);
  });
});

describe("manage in the agent config", () => {
  const base = ["controllers: [127.0.0.1:7900]", "sockets: [/run/haproxy/admin.sock]", "id: edge-1"];
  const yaml = (...extra: string[]) => parseConfigText(agentConfigSchema, [...base, ...extra].join("\n"), "yaml", "agent.yaml");

  it("reads the list, and leaves it absent when not given", () => {
    expect(yaml('manage: [be_app, "be_web_*", "*"]').manage).toEqual(["be_app", "be_web_*", "*"]);
    expect(yaml("manage:", "  - be_app").manage).toEqual(["be_app"]);
    expect(yaml().manage).toBeUndefined();
  });

  it("refuses a pattern that can match nothing, naming it, its index and its line", () => {
    expectInvalid(
      () => yaml("manage:", "  - be_app", '  - "be app"', "  - ''"),
      [
        { path: "manage[1]", message: `line 6:5: matches no backend: names hold only letters, digits, '.', '_' and '-', never " " ('*' is the only wildcard)`, value: "be app" },
        { path: "manage[2]", message: "line 7:5: must not be empty: give a backend name, or a pattern such as be_web_* ('*' alone: every backend)", value: "" },
      ],
      "agent.yaml",
    );
  });

  it("refuses an empty list and a bare string", () => {
    expectInvalid(() => yaml("manage: []"), [{ path: "manage", message: "line 4:9: must list at least one backend name or pattern ('*': every backend)", value: [] }], "agent.yaml");
    expectInvalid(() => yaml("manage: be_app"), [{ path: "manage", message: "line 4:9: must be a list of backend names or patterns", value: "be_app" }], "agent.yaml");
  });

  it("takes --manage flags, naming the flag when one is bad", () => {
    const flags = { controller: ["127.0.0.1:7900"], socket: ["/run/haproxy/admin.sock"], id: "edge-1" };
    expect(agentConfigFromFlags({ ...flags, manage: ["be_app", "be_web_*"] }).manage).toEqual(["be_app", "be_web_*"]);
    expect(agentConfigFromFlags(flags).manage).toBeUndefined();
    expectInvalid(
      () => agentConfigFromFlags({ ...flags, manage: ["be_app", "be?"] }),
      [{ path: "--manage", message: `matches no backend: names hold only letters, digits, '.', '_' and '-', never "?" ('*' is the only wildcard)`, value: "be?" }],
      "command line",
    );
  });

  it("warns only when there is no list, which keeps every backend managed", async () => {
    expect(manageWarning(yaml("manage: [be_app]"))).toBeNull();
    expect(manageWarning(yaml('manage: ["*"]'))).toBeNull();
    expect(manageWarning(yaml())).toMatch(/^no 'manage' list: this agent changes every backend the controller names/);
    expect((await prepareAgent(yaml())).warnings).toEqual([manageWarning(yaml())]);
    expect((await prepareAgent(yaml("manage: [be_app]"))).warnings).toEqual([]);
  });

  it("is in the packaged config, explicitly", async () => {
    const packaged = await prepareAgent(await loadAgentConfig(join(DEPLOY_CONFIG, "agent.yaml")));
    expect([packaged.config.manage, packaged.warnings]).toEqual([["*"], []]);
  });
});

describe("check-config with and without manage", () => {
  let dir = "";
  const written: string[] = [];
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "hafleet-manage-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  afterEach(() => {
    vi.restoreAllMocks();
    written.length = 0;
  });

  async function check(text: string): Promise<{ code: number; stdout: string; stderr: string }> {
    const file = join(dir, `agent-${Math.random().toString(36).slice(2)}.yaml`);
    await writeFile(file, text);
    const out = { stdout: "", stderr: "" };
    vi.spyOn(process.stdout, "write").mockImplementation((chunk) => ((out.stdout += String(chunk)), true));
    vi.spyOn(process.stderr, "write").mockImplementation((chunk) => ((out.stderr += String(chunk)), true));
    const code = await checkConfigFile(file, async (path) => prepareAgent(await loadAgentConfig(path)));
    vi.restoreAllMocks();
    return { code, ...out, stdout: out.stdout.replaceAll(file, "FILE"), stderr: out.stderr.replaceAll(file, "FILE") };
  }

  const base = "controllers: [127.0.0.1:7900]\nsockets: [/run/haproxy/admin.sock]\nid: edge-1\n";

  it("says ok and nothing else with a list", async () => {
    expect(await check(`${base}manage: [be_app]\n`)).toEqual({ code: 0, stdout: "FILE: ok\n", stderr: "" });
  });

  it("says ok on stdout and warns on stderr without one", async () => {
    const result = await check(base);
    expect([result.code, result.stdout]).toEqual([0, "FILE: ok\n"]);
    expect(result.stderr).toBe(`FILE: warning: ${manageWarning({})}\n`);
  });

  it("refuses a bad pattern with exit 2, naming it", async () => {
    expect(await check(`${base}manage: [be_app, "be app"]\n`)).toEqual({
      code: 2,
      stdout: "",
      stderr: `FILE: manage[1]: line 4:18: matches no backend: names hold only letters, digits, '.', '_' and '-', never " " ('*' is the only wildcard) (got "be app")\n`,
    });
  });

  it("prints nothing more for a loader without warnings (the controller's)", async () => {
    const file = join(dir, "other.yaml");
    vi.spyOn(process.stdout, "write").mockImplementation((chunk) => (written.push(String(chunk)), true));
    const stderr = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
    expect(await checkConfigFile(file, async () => ({ listen: "x" }))).toBe(0);
    expect([written, stderr.mock.calls.length]).toEqual([[`${file}: ok\n`], 0]);
  });
});
