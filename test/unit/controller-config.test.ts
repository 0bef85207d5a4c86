import { hostname } from "node:os";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseFlags } from "../../agent/cli/args.js";
import { InvalidInputError, type InputIssue } from "../../agent/errors.js";
import { controllerConfigSchema, parseListen, type ControllerConfig } from "../../controller/config/controller-config.js";
import {
  configFromFlags,
  loadControllerConfig,
  parseControllerConfigText,
  quickStartFlagOptions,
  type QuickStartFlags,
} from "../../controller/config/load-config.js";
import { caught, expectInvalid as expectInvalidFrom } from "../support/helpers.js";

const SOURCE = "hafleet.yaml";

function expectInvalid(run: () => unknown, issues: InputIssue[], source = SOURCE): InvalidInputError {
  return expectInvalidFrom(run, issues, source);
}


function yaml(text: string): ControllerConfig {
  return parseControllerConfigText(text, "yaml", SOURCE);
}

function json(text: string): ControllerConfig {
  return parseControllerConfigText(text, "json", "hafleet.json");
}

/** A valid YAML document with `extra` lines appended at top level (line 6 onwards). */
function yamlWith(extra: string): string {
  return ["discovery:", "  file: catalog.json", "backends:", "  - backend: be_web", "    service: web", extra].join("\n");
}

const DEFAULTS = {
  listen: "127.0.0.1:7900",
  guards: { maxDropShare: 0.5, recheckMs: 5000 },
  debounce: { quietMs: 100, maxMs: 1000 },
  agents: { heartbeatMs: 5000, deadAfterMs: 15000, forgetAfterMs: 86_400_000, max: 20_000, maxConnectionAgeMs: 1_800_000 },
  limits: { maxMessageBytes: 16_777_216, backendsPerAgent: 1_000, serversPerBackend: 5_000, pushesPerSecond: 10 },
  http: { listen: "127.0.0.1:7901", openLoopbackReads: true },
  rollout: { canary: { count: 1 }, waves: [0.1, 0.25, 0.5, 1], bakeMs: 30_000, waveTimeoutMs: 120_000, autoRollback: true, maxServingDrop: 0.1, stageConfigChanges: true },
};

const FULL_YAML = `# the whole configuration, every field given
listen: "[::1]:7901"
discovery:
  consul:
    address: https://consul.internal:8501
    token: s3cr3t-token
    datacenter: dc-1
    healthy: passing-or-warning
    weights: consul
backends:
  - backend: be_web
    service: web
    tag: v2
    agents: { region: eu-west, role: edge }
    allowEmpty: true
  - backend: be_api
    service: api
guards:
  maxDropShare: 0.25
debounce:
  quietMs: 250ms
  maxMs: 2s
agents:
  heartbeatMs: 1000
  deadAfterMs: 1m
  forgetAfterMs: 60m
limits:
  maxMessageBytes: 1048576
  backendsPerAgent: 50
  serversPerBackend: 2000
  pushesPerSecond: 2.5
http:
  listen: "0.0.0.0:7911"
  tokenFile: /etc/hafleet/token
stateDir: /var/lib/hafleet-controller
`;

/** The consul block's defaults: 60 s wait as consul-template, stale reads bounded at 2 s, a budget below Consul's 200 connections. */
const CONSUL_DEFAULTS = {
  healthy: "passing",
  weights: "meta",
  wait: 60_000,
  consistency: "stale",
  maxStaleMs: 2_000,
  maxBodyBytes: 16 * 1024 * 1024,
  maxConnections: 150,
  readyWaitMs: 10_000,
  configurationRetryMs: 60_000,
} as const;

const FULL_EXPECTED: ControllerConfig = controllerConfigSchema.parse({
  listen: "[::1]:7901",
  discovery: {
    consul: {
      address: "https://consul.internal:8501",
      token: "s3cr3t-token",
      datacenter: "dc-1",
      healthy: "passing-or-warning",
      weights: "consul",
    },
  },
  backends: [
    { backend: "be_web", service: "web", tag: "v2", agents: { region: "eu-west", role: "edge" }, allowEmpty: true },
    { backend: "be_api", service: "api", allowEmpty: false },
  ],
  guards: { maxDropShare: 0.25 },
  debounce: { quietMs: 250, maxMs: 2000 },
  agents: { heartbeatMs: 1000, deadAfterMs: 60000, forgetAfterMs: 3_600_000, max: 20_000, maxConnectionAgeMs: 1_800_000 },
  limits: { maxMessageBytes: 1_048_576, backendsPerAgent: 50, serversPerBackend: 2_000, pushesPerSecond: 2.5 },
  http: { listen: "0.0.0.0:7911", tokenFile: "/etc/hafleet/token", openLoopbackReads: true },
  stateDir: "/var/lib/hafleet-controller",
});

describe("controller config: valid files", () => {
  it("applies every default to a minimal YAML file", () => {
    expect(yaml(yamlWith(""))).toEqual({
      ...DEFAULTS,
      discovery: { file: "catalog.json" },
      backends: [{ backend: "be_web", service: "web", allowEmpty: false, staged: false }],
    });
  });

  it("defaults the consul block's own fields", () => {
    const config = yaml("discovery:\n  consul:\n    address: http://127.0.0.1:8500\nbackends:\n  - { backend: b, service: s }\n");
    expect(config.discovery).toEqual({ consul: { address: "http://127.0.0.1:8500", ...CONSUL_DEFAULTS } });
  });

  it("reads every field of a full YAML file, durations in any unit", () => {
    expect(yaml(FULL_YAML)).toEqual(FULL_EXPECTED);
    // Spelled out once, so the test does not only compare the schema with itself.
    expect(FULL_EXPECTED.debounce).toEqual({ quietMs: 250, maxMs: 2000 });
    expect(FULL_EXPECTED.agents).toEqual({ heartbeatMs: 1000, deadAfterMs: 60000, forgetAfterMs: 3_600_000, max: 20_000, maxConnectionAgeMs: 1_800_000 });
  });

  it("reads the same configuration from JSON", () => {
    const text = JSON.stringify(
      {
        listen: "[::1]:7901",
        discovery: {
          consul: { address: "https://consul.internal:8501", token: "s3cr3t-token", datacenter: "dc-1", healthy: "passing-or-warning", weights: "consul" },
        },
        backends: [
          { backend: "be_web", service: "web", tag: "v2", agents: { region: "eu-west", role: "edge" }, allowEmpty: true },
          { backend: "be_api", service: "api" },
        ],
        guards: { maxDropShare: 0.25 },
        debounce: { quietMs: "250ms", maxMs: "2s" },
        agents: { heartbeatMs: 1000, deadAfterMs: "1m", forgetAfterMs: "60m" },
        limits: { maxMessageBytes: 1_048_576, backendsPerAgent: 50, serversPerBackend: 2_000, pushesPerSecond: 2.5 },
        http: { listen: "0.0.0.0:7911", tokenFile: "/etc/hafleet/token" },
        stateDir: "/var/lib/hafleet-controller",
      },
      null,
      2,
    );
    expect(json(text)).toEqual(FULL_EXPECTED);
  });

  it.each<[unknown, number]>([
    [250, 250],
    ['"250"', 250],
    ["250ms", 250],
    ["3s", 3000],
    ["2m", 120000],
    [2147483647, 2147483647],
  ])("reads the duration %s as %d ms", (written, ms) => {
    expect(yaml(yamlWith(`debounce: { quietMs: 1, maxMs: ${String(written)} }`)).debounce.maxMs).toBe(ms);
  });

  it("accepts maxDropShare at both ends of 0..1", () => {
    expect(yaml(yamlWith("guards: { maxDropShare: 0 }")).guards.maxDropShare).toBe(0);
    expect(yaml(yamlWith("guards: { maxDropShare: 1 }")).guards.maxDropShare).toBe(1);
  });

  it("takes an empty selector as matching every agent, like no selector", () => {
    expect(yaml(yamlWith("").replace("service: web", "service: web\n    agents: {}")).backends[0]?.agents).toEqual({});
  });

  it("lets one service feed two backends", () => {
    const config = yaml(yamlWith("  - backend: be_web2\n    service: web"));
    expect(config.backends.map((mapping) => [mapping.backend, mapping.service])).toEqual([
      ["be_web", "web"],
      ["be_web2", "web"],
    ]);
  });
});

describe("parseListen", () => {
  it.each<[string, { host: string; port: number }]>([
    ["127.0.0.1:7900", { host: "127.0.0.1", port: 7900 }],
    ["0.0.0.0:1", { host: "0.0.0.0", port: 1 }],
    ["[::1]:7900", { host: "::1", port: 7900 }],
    ["[2001:db8::5]:65535", { host: "2001:db8::5", port: 65535 }],
    ["controller.internal:7900", { host: "controller.internal", port: 7900 }],
    ["localhost:0", { host: "localhost", port: 0 }],
  ])("%s", (text, expected) => {
    expect(parseListen(text)).toEqual(expected);
  });

  it.each(["7900", "host:", ":7900", "[::1]7900", "::1:7900", "[zz::1]:80", "[127.0.0.1]:80", "1.2.3.4:65536", "a b:80", "host:80;rm", "host:-1"])(
    "refuses %j, in a file too",
    (text) => {
      expectInvalid(() => parseListen(text), [{ path: "listen", message: "must be HOST:PORT (IPv6 as [::1]:PORT) with a port in 0..65535", value: text }], "listen");
      expectInvalid(
        () => yaml(`listen: ${JSON.stringify(text)}\n${yamlWith("")}`),
        [{ path: "listen", message: "line 1:9: must be HOST:PORT (IPv6 as [::1]:PORT) with a port in 0..65535", value: text }],
      );
    },
  );
});

describe("controller config: refused, naming the field and its line", () => {
  it("refuses unknown keys at every level, one issue per key, at the key", () => {
    const text = [
      "listne: 127.0.0.1:7900", // 1
      "discovery:", // 2
      "  file: catalog.json", // 3
      "  consul_address: x", // 4
      "backends:", // 5
      "  - backend: be_web", // 6
      "    service: web", // 7
      "    weight: 3", // 8
      "    labels: [a]", // 9
      "guards: { maxDropShare: 0.5, minKeep: 2 }", // 10
      "debounce: { quiet: 5 }", // 11
      "agents: { heartbeat: 5 }", // 12
    ].join("\n");
    expectInvalid(
      () => yaml(text),
      [
        { path: "listne", message: "line 1:1: unknown field" },
        { path: "discovery.consul_address", message: "line 4:3: unknown field" },
        { path: "backends[0].weight", message: "line 8:5: unknown field" },
        { path: "backends[0].labels", message: "line 9:5: unknown field" },
        { path: "guards.minKeep", message: "line 10:30: unknown field" },
        { path: "debounce.quiet", message: "line 11:13: unknown field" },
        { path: "agents.heartbeat", message: "line 12:11: unknown field" },
      ],
    );
  });

  it("refuses conflicting Consul credentials and bad Consul settings, naming each", () => {
    const consul = (fields: string) => `discovery:\n  consul: { address: http://c:8500, ${fields} }\nbackends: [{ backend: b, service: s }]`;
    expectInvalid(() => yaml(consul("token: abc, tokenFile: /t")), [{ path: "discovery.consul.tokenFile", message: "line 2:60: give token or tokenFile, not both", value: "/t" }]);
    expect((caught(() => yaml(consul("certFile: /c.pem"))) as InvalidInputError).issues).toMatchObject([{ path: "discovery.consul.certFile", message: expect.stringContaining("needs keyFile too") }]);
    expect(caught(() => yaml(consul("consistency: eventual")))).toBeInstanceOf(InvalidInputError);
    expect(caught(() => yaml(consul("wait: 11m")))).toBeInstanceOf(InvalidInputError);
    expect(caught(() => yaml(consul("maxBodyBytes: 10")))).toBeInstanceOf(InvalidInputError);
    const mapping = (fields: string) => `discovery:\n  consul: { address: http://c:8500 }\nbackends: [{ backend: b, service: s, ${fields} }]`;
    expect(yaml(mapping("dc: dc2, ns: team-a, partition: p1, peer: east, filter: 'Service.Meta.v == \"2\"', tags: [a, b], address: 'node:wan'")).backends[0]).toMatchObject({ dc: "dc2", ns: "team-a", partition: "p1", peer: "east", filter: 'Service.Meta.v == "2"', tags: ["a", "b"], address: "node:wan" });
    expect(caught(() => yaml(mapping("address: wan")))).toBeInstanceOf(InvalidInputError);
    expect(caught(() => yaml(mapping("peer: east, samenessGroup: prod")))).toBeInstanceOf(InvalidInputError);
  });

  it("refuses an unknown key inside the consul block", () => {
    const text = "discovery:\n  consul:\n    address: http://c:8500\n    acl: x\nbackends: [{ backend: b, service: s }]";
    expectInvalid(() => yaml(text), [{ path: "discovery.consul.acl", message: "line 4:5: unknown field" }]);
  });

  it("refuses both discovery kinds at once, and neither", () => {
    const both = "backends: [{ backend: b, service: s }]\ndiscovery:\n  file: c.json\n  consul: { address: http://c:8500 }";
    expectInvalid(() => yaml(both), [{ path: "discovery", message: "line 3:3: must have exactly one of consul, file", value: { file: "c.json", consul: { address: "http://c:8500" } } }]);
    const neither = "backends: [{ backend: b, service: s }]\ndiscovery: {}";
    expectInvalid(() => yaml(neither), [{ path: "discovery", message: "line 2:12: must have exactly one of consul, file", value: {} }]);
  });

  it("names a missing required field at its parent", () => {
    expectInvalid(
      () => yaml("backends: [{ backend: b, service: s }]\n"),
      [{ path: "discovery", message: "line 1:1: Invalid input: expected object, received undefined" }],
    );
    expectInvalid(
      () => yaml(yamlWith("").replace("    service: web", "    tag: v1")),
      [{ path: "backends[0].service", message: "line 4:5: Invalid input: expected string, received undefined" }],
    );
  });

  it.each(["ftp://consul:8500", "consul:8500", "127.0.0.1:8500", "http://", "not a url"])("refuses the consul address %j", (address) => {
    const text = `backends: [{ backend: b, service: s }]\ndiscovery:\n  consul:\n    address: ${JSON.stringify(address)}`;
    expectInvalid(() => yaml(text), [{ path: "discovery.consul.address", message: "line 4:14: must be an http:// or https:// URL", value: address }]);
  });

  it("refuses unknown health and weight modes", () => {
    const text = "backends: [{ backend: b, service: s }]\ndiscovery:\n  consul:\n    address: http://c:8500\n    healthy: any\n    weights: random";
    const invalid = expectInvalid(() => yaml(text), [
      { path: "discovery.consul.healthy", message: 'line 5:14: Invalid option: expected one of "passing"|"passing-or-warning"', value: "any" },
      { path: "discovery.consul.weights", message: 'line 6:14: Invalid option: expected one of "meta"|"consul"', value: "random" },
    ]);
    expect(invalid.message).toContain("discovery.consul.healthy");
  });

  it("never echoes a bad token back", () => {
    const text = "backends: [{ backend: b, service: s }]\ndiscovery:\n  consul:\n    address: http://c:8500\n    token: 'my secret\\n'";
    const invalid = expectInvalid(() => yaml(text.replace("'my secret\\n'", '"my secret\\n"')), [
      { path: "discovery.consul.token", message: "line 5:12: must be 1 to 256 visible ASCII characters" },
    ]);
    expect(invalid.message).not.toContain("secret");
  });

  it.each<[string, string[]]>([
    ["be web", ["may contain only letters, digits, '.', '_' and '-'"]],
    ["be;disable server x/y", ["may contain only letters, digits, '.', '_' and '-'"]],
    ["", ["must not be empty", "may contain only letters, digits, '.', '_' and '-'"]],
    ["b".repeat(65), ["must be at most 64 characters"]],
  ])("refuses the backend name %j", (name, messages) => {
    expectInvalid(
      () => yaml(yamlWith("").replace("backend: be_web", `backend: ${JSON.stringify(name)}`)),
      messages.map((message) => ({ path: "backends[0].backend", message: `line 4:14: ${message}`, value: name })),
    );
  });

  it.each(["x;y", "web service", "", "s".repeat(129), "web\nx"])("refuses the service and tag %j", (bad) => {
    const text = yamlWith(`  - backend: be_api\n    service: ${JSON.stringify(bad)}\n    tag: ${JSON.stringify(bad)}`);
    const message = "must be 1 to 128 letters, digits, '.', '_' or '-'";
    expectInvalid(() => yaml(text), [
      { path: "backends[1].service", message: `line 7:14: ${message}`, value: bad },
      { path: "backends[1].tag", message: `line 8:10: ${message}`, value: bad },
    ]);
  });

  it("refuses a backend mapped twice, even when another entry is also wrong", () => {
    const text = yamlWith(["  - backend: be_api", "    service: 'a b'", "  - backend: be_web", "    service: web2"].join("\n"));
    expectInvalid(() => yaml(text), [
      { path: "backends[1].service", message: "line 7:14: must be 1 to 128 letters, digits, '.', '_' or '-'", value: "a b" },
      { path: "backends[2].backend", message: "line 8:14: backend mapped twice (first at backends[0])", value: "be_web" },
    ]);
  });

  it("refuses an empty mapping", () => {
    expectInvalid(() => yaml("discovery: { file: c.json }\nbackends: []"), [{ path: "backends", message: "line 2:11: must map at least one backend", value: [] }]);
  });

  it("refuses bad selector names and values", () => {
    const text = yamlWith("").replace("service: web", "service: web\n    agents:\n      zone: 'eu west'\n      'bad key': x\n      rack: 5\n      role: ''");
    const message = "must be 1 to 63 letters, digits, '.', '_' or '-'";
    expectInvalid(() => yaml(text), [
      { path: "backends[0].agents.zone", message: `line 7:13: ${message}`, value: "eu west" },
      { path: "backends[0].agents.bad key", message: `line 8:7: label name ${message}`, value: "x" },
      { path: "backends[0].agents.rack", message: "line 9:13: must be a string", value: 5 },
      { path: "backends[0].agents.role", message: `line 10:13: ${message}`, value: "" },
    ]);
  });

  it("refuses a selector that is not a map", () => {
    expectInvalid(() => yaml(yamlWith("").replace("service: web", "service: web\n    agents:")), [
      { path: "backends[0].agents", message: "line 6:12: Invalid input: expected record, received null", value: null },
    ]);
  });

  it.each<[string, string]>([
    ["1.5", "must be between 0 and 1"],
    ["-0.1", "must be between 0 and 1"],
    ["'0.5'", "must be a number"],
  ])("refuses maxDropShare %s", (written, message) => {
    const issues = caught(() => yaml(yamlWith(`guards:\n  maxDropShare: ${written}`))) as InvalidInputError;
    expect(issues).toBeInstanceOf(InvalidInputError);
    expect(issues.issues).toHaveLength(1);
    expect(issues.issues[0]).toMatchObject({ path: "guards.maxDropShare", message: `line 7:17: ${message}` });
  });

  it.each<[string, string]>([
    ["5x", "must be a duration: milliseconds, or a string like 500ms, 5s or 2m"],
    ["'5 s'", "must be a duration: milliseconds, or a string like 500ms, 5s or 2m"],
    ["-5s", "must be a duration: milliseconds, or a string like 500ms, 5s or 2m"],
    ["true", "must be a duration: milliseconds, or a string like 500ms, 5s or 2m"],
    ["1.5", "must be a whole number of milliseconds"],
    ["0", "must be at least 1 ms"],
    ["0s", "must be at least 1 ms"],
    ["-1", "must be at least 1 ms"],
    ["2147483648", "must be at most 2147483647 ms"],
    ["30d", "must be a duration: milliseconds, or a string like 500ms, 5s or 2m"],
  ])("refuses the duration %s", (written, message) => {
    const error = caught(() => yaml(yamlWith(`agents:\n  heartbeatMs: ${written}`))) as InvalidInputError;
    expect(error).toBeInstanceOf(InvalidInputError);
    expect(error.issues.map(({ path, message: text }) => ({ path, message: text }))).toEqual([{ path: "agents.heartbeatMs", message: `line 7:16: ${message}` }]);
  });

  it("refuses limits past what the protocol carries, naming the setting", () => {
    expectInvalid(() => yaml(yamlWith("limits: { maxMessageBytes: 1024, backendsPerAgent: 10001, serversPerBackend: 0, pushesPerSecond: 0 }")), [
      { path: "limits.maxMessageBytes", message: "line 6:28: must be at least 65536", value: 1024 },
      { path: "limits.backendsPerAgent", message: "line 6:52: must be at most 10000", value: 10001 },
      { path: "limits.serversPerBackend", message: "line 6:78: must be at least 1", value: 0 },
      { path: "limits.pushesPerSecond", message: "line 6:98: must be above 0", value: 0 },
    ]);
  });

  it("takes a leadership block with Consul discovery only, with Consul's session bounds", () => {
    const consul = "discovery:\n  consul: { address: http://127.0.0.1:8500 }\nbackends:\n  - { backend: be_web, service: web }\n";
    expect(yaml(`${consul}leadership: { replica: ctl-1 }`).leadership).toEqual({ key: "hafleet/rollout", replica: "ctl-1", sessionTtlMs: 15_000, lockDelayMs: 15_000, nodeChecks: [] });
    expect(yaml(`${consul}leadership: {}`).leadership?.replica).toBe(hostname());
    expect(yaml(`${consul}leadership: { fleetPrefix: hafleet/fleet }`).leadership?.fleetPrefix).toBe("hafleet/fleet");
    expectInvalid(() => yaml(`${consul}leadership: { fleetPrefix: "hafleet/" }`), [
      { path: "leadership.fleetPrefix", message: "line 5:28: must be a Consul KV key: '/'-separated parts of letters, digits, '.', '_' or '-'", value: "hafleet/" },
    ]);
    expectInvalid(() => yaml(`${consul}leadership: { key: "a//b", sessionTtlMs: 5s, url: ctl-1 }`), [
      { path: "leadership.key", message: "line 5:20: must be a Consul KV key: '/'-separated parts of letters, digits, '.', '_' or '-'", value: "a//b" },
      { path: "leadership.sessionTtlMs", message: "line 5:42: must be between 10s and 24h (Consul's range)", value: "5s" },
      { path: "leadership.url", message: "line 5:51: must be an http:// or https:// URL", value: "ctl-1" },
    ]);
    expectInvalid(() => yaml(yamlWith("leadership: {}")), [{ path: "leadership", message: "line 6:13: needs discovery.consul: the lock is held in Consul", value: expect.anything() }]);
  });

  it("refuses timings that contradict each other", () => {
    expectInvalid(() => yaml(yamlWith("debounce: { quietMs: 2s, maxMs: 1s }\nagents: { heartbeatMs: 5s, deadAfterMs: 5000 }")), [
      { path: "debounce.quietMs", message: "line 6:22: must not exceed maxMs (1000 ms)", value: "2s" },
      { path: "agents.deadAfterMs", message: "line 7:41: must be longer than heartbeatMs (5000 ms), or every agent is dead between heartbeats", value: 5000 },
    ]);
  });

  it("reports every problem of a file at once", () => {
    const error = caught(() => yaml("listen: nope\ndiscovery: {}\nbackends:\n  - backend: 'a b'\n    service: s\nguards: { maxDropShare: 2 }\nx: 1")) as InvalidInputError;
    expect(error.issues.map((issue) => issue.path)).toEqual(["listen", "discovery", "backends[0].backend", "guards.maxDropShare", "x"]);
    expect(error.issues.every((issue) => /^line \d+:\d+: /.test(issue.message))).toBe(true);
  });
});

describe("controller config: syntax errors name the line", () => {
  it("YAML: a bad indent", () => {
    const error = caught(() => yaml("discovery:\n  file: c.json\nbackends:\n  - backend: b\n   service: s\n")) as InvalidInputError;
    expect(error).toBeInstanceOf(InvalidInputError);
    expect(error.issues.length).toBeGreaterThan(0);
    expect(error.issues[0]?.path).toBe("");
    expect(error.issues[0]?.message).toMatch(/^line 5:\d+: not valid YAML: /);
  });

  it("YAML: a key given twice is refused, not resolved silently", () => {
    expectInvalid(() => yaml("discovery: { file: a.json }\nbackends: [{ backend: b, service: s }]\ndiscovery: { file: b.json }"), [
      { path: "", message: "line 3:1: not valid YAML: Map keys must be unique" },
    ]);
  });

  it("YAML: a second document is refused", () => {
    const error = caught(() => yaml(`${yamlWith("")}\n---\nlisten: 127.0.0.1:1\n`)) as InvalidInputError;
    expect(error).toBeInstanceOf(InvalidInputError);
    expect(error.issues[0]?.message).toMatch(/^line 7:1: not valid YAML: /);
  });

  it("YAML: an empty file is not a configuration", () => {
    expectInvalid(() => yaml(""), [{ path: "", message: "line 1:1: Invalid input: expected object, received null", value: null }]);
  });

  it("YAML: an alias bomb is refused", () => {
    const bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]", "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]", "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]", "d: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]"].join("\n");
    const error = caught(() => yaml(bomb)) as InvalidInputError;
    expect(error).toBeInstanceOf(InvalidInputError);
    expect(error.issues[0]?.message).toMatch(/^cannot read the document: .*alias/i);
  });

  it.each<[string, string, RegExp]>([
    ["a trailing comma", '{\n  "discovery": { "file": "c.json" },\n  "backends": [],\n}', /^line 4:1: not valid JSON: /],
    ["a comment", '{\n  "discovery": { "file": "c.json" } # here\n}', /^line 2:37: not valid JSON: /],
    ["single quotes", "{\n  'discovery': 1\n}", /^line 2:3: not valid JSON: /],
    ["YAML block style", "discovery:\n  file: c.json", /^line 1:1: not valid JSON: /],
  ])("JSON: %s is refused with its line", (_name, text, message) => {
    const error = caught(() => json(text)) as InvalidInputError;
    expect(error).toBeInstanceOf(InvalidInputError);
    expect(error.source).toBe("hafleet.json");
    expect(error.issues).toHaveLength(1);
    expect(error.issues[0]?.path).toBe("");
    expect(error.issues[0]?.message).toMatch(message);
  });

  it("JSON: a key given twice is refused", () => {
    const error = caught(() => json('{\n  "backends": [],\n  "backends": []\n}')) as InvalidInputError;
    expect(error.issues).toEqual([{ path: "", message: "line 3:3: not valid JSON: Map keys must be unique" }]);
  });

  it("JSON: field errors carry lines as well", () => {
    const text = ["{", '  "discovery": { "file": "c.json" },', '  "backends": [', '    { "backend": "be_web", "service": "web" },', '    { "backend": "be web", "service": "api", "weight": 1 }', "  ]", "}"].join("\n");
    expectInvalid(
      () => json(text),
      [
        { path: "backends[1].backend", message: "line 5:18: may contain only letters, digits, '.', '_' and '-'", value: "be web" },
        { path: "backends[1].weight", message: "line 5:46: unknown field" },
      ],
      "hafleet.json",
    );
  });
});

describe("loadControllerConfig", () => {
  let dir = "";
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "hafleet-config-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reads .yaml, .yml and .json, choosing the parser by extension", async () => {
    await writeFile(join(dir, "full.yaml"), FULL_YAML);
    await writeFile(join(dir, "full.yml"), FULL_YAML);
    await writeFile(join(dir, "min.json"), JSON.stringify({ discovery: { file: "/srv/catalog.json" }, backends: [{ backend: "b", service: "s" }] }));
    expect(await loadControllerConfig(join(dir, "full.yaml"))).toEqual(FULL_EXPECTED);
    expect(await loadControllerConfig(join(dir, "full.yml"))).toEqual(FULL_EXPECTED);
    expect(await loadControllerConfig(join(dir, "min.json"))).toEqual({
      ...DEFAULTS,
      discovery: { file: "/srv/catalog.json" },
      backends: [{ backend: "b", service: "s", allowEmpty: false, staged: false }],
    });
  });

  it("refuses YAML in a .json file", async () => {
    const path = join(dir, "yaml-inside.json");
    await writeFile(path, yamlWith(""));
    await expect(loadControllerConfig(path)).rejects.toMatchObject({ source: path, issues: [{ path: "", message: expect.stringMatching(/^line 1:1: not valid JSON/) }] });
  });

  it("resolves a relative catalog path against the config file's directory", async () => {
    const path = join(dir, "relative.yaml");
    await writeFile(path, yamlWith(""));
    expect((await loadControllerConfig(path)).discovery).toEqual({ file: join(dir, "catalog.json") });
  });

  it("resolves Consul's CA file against the config file's directory", async () => {
    const path = join(dir, "consul-tls.yaml");
    await writeFile(path, "discovery:\n  consul: { address: https://consul.internal:8501, caFile: tls/consul-ca.pem }\nbackends:\n  - { backend: be_web, service: web }\n");
    expect((await loadControllerConfig(path)).discovery).toEqual({ consul: { address: "https://consul.internal:8501", caFile: join(dir, "tls/consul-ca.pem"), ...CONSUL_DEFAULTS } });
  });

  it("refuses other extensions and unreadable files", async () => {
    const toml = join(dir, "hafleet.toml");
    await writeFile(toml, yamlWith(""));
    await expect(loadControllerConfig(toml)).rejects.toMatchObject({
      code: "HAFLEET_INVALID_INPUT",
      source: toml,
      issues: [{ path: "", message: "a config file must be named *.yaml, *.yml or *.json" }],
    });
    const missing = join(dir, "missing.yaml");
    await expect(loadControllerConfig(missing)).rejects.toMatchObject({
      source: missing,
      issues: [{ path: "", message: expect.stringMatching(/^cannot read the file: ENOENT/) }],
    });
  });

  it("names the file and the line of a field error", async () => {
    const path = join(dir, "bad.yaml");
    await writeFile(path, yamlWith("guards: { maxDropShare: 1.5 }"));
    const error = await loadControllerConfig(path).catch((caughtError: unknown) => caughtError);
    expect(error).toBeInstanceOf(InvalidInputError);
    expect((error as InvalidInputError).message).toBe(`${path}: guards.maxDropShare: line 6:25: must be between 0 and 1 (got 1.5)`);
  });
});

describe("configFromFlags", () => {
  const FLAGS = "command line";

  it("builds a consul configuration with defaults everywhere else", () => {
    expect(
      configFromFlags({
        consul: "http://127.0.0.1:8500",
        "consul-token": "tok",
        "consul-dc": "dc1",
        listen: "0.0.0.0:7999",
        insecure: true,
        http: "127.0.0.1:0",
        map: ["web=be_web", "api#canary=be_api_canary"],
      }),
    ).toEqual({
      ...DEFAULTS,
      listen: "0.0.0.0:7999",
      insecure: true,
      http: { listen: "127.0.0.1:0", openLoopbackReads: true },
      discovery: { consul: { address: "http://127.0.0.1:8500", token: "tok", datacenter: "dc1", ...CONSUL_DEFAULTS } },
      backends: [
        { backend: "be_web", service: "web", allowEmpty: false, staged: false },
        { backend: "be_api_canary", service: "api", tag: "canary", allowEmpty: false, staged: false },
      ],
    });
  });

  it("takes mTLS files all three or none, and refuses plaintext off loopback without --insecure", () => {
    const base = { "catalog-file": "catalog.json", map: ["web=be_web"] };
    expect(configFromFlags({ ...base, "tls-ca": "ca.crt", "tls-cert": "c.crt", "tls-key": "c.key", listen: "0.0.0.0:7900" }).tls).toEqual({ ca: "ca.crt", cert: "c.crt", key: "c.key" });
    expectInvalid(() => configFromFlags({ ...base, "tls-ca": "ca.crt" }), [{ path: "--tls-ca", message: "give all three of --tls-ca, --tls-cert, --tls-key, or none" }], "command line");
    expectInvalid(
      () => configFromFlags({ ...base, listen: "0.0.0.0:7900" }),
      [{ path: "--listen", message: "needs tls (ca, cert, key) or insecure: true, since it is not a loopback address", value: "0.0.0.0:7900" }],
      "command line",
    );
  });

  it("builds a catalog-file configuration", () => {
    expect(configFromFlags({ "catalog-file": "catalog.json", map: ["web=be_web"] })).toEqual({
      ...DEFAULTS,
      discovery: { file: "catalog.json" },
      backends: [{ backend: "be_web", service: "web", allowEmpty: false, staged: false }],
    });
  });

  it("takes what parseFlags gives for quickStartFlagOptions", () => {
    const args = ["--catalog-file", "c.json", "--map", "a=be_a", "--map", "b#t=be_b", "--listen", "[::1]:0"];
    const flags: QuickStartFlags = parseFlags("hafleet controller", args, quickStartFlagOptions);
    const config = configFromFlags(flags, "hafleet controller");
    expect(config.listen).toBe("[::1]:0");
    expect(config.backends.map((mapping) => mapping.backend)).toEqual(["be_a", "be_b"]);
    expect(config.backends[1]?.tag).toBe("t");
  });

  it("refuses both or neither of --consul and --catalog-file", () => {
    const message = "give exactly one of --consul URL, --catalog-file FILE";
    expectInvalid(() => configFromFlags({ map: ["a=b"] }), [{ path: "--consul", message }], FLAGS);
    expectInvalid(() => configFromFlags({ consul: "http://c:8500", "catalog-file": "c.json", map: ["a=b"] }), [{ path: "--consul", message }], FLAGS);
  });

  it("refuses consul options without --consul", () => {
    expectInvalid(
      () => configFromFlags({ "catalog-file": "c.json", "consul-token": "t", "consul-dc": "dc1", map: ["a=b"] }),
      [
        { path: "--consul-token", message: "only goes with --consul" },
        { path: "--consul-dc", message: "only goes with --consul" },
      ],
      FLAGS,
    );
  });

  it("needs at least one well-formed --map", () => {
    expectInvalid(() => configFromFlags({ "catalog-file": "c.json" }), [{ path: "--map", message: "give at least one --map; each must be SERVICE=BACKEND or SERVICE#TAG=BACKEND" }], FLAGS);
    expectInvalid(
      () => configFromFlags({ "catalog-file": "c.json", map: ["web", "a=b"] }),
      [{ path: "--map", message: "must be SERVICE=BACKEND or SERVICE#TAG=BACKEND", value: "web" }],
      FLAGS,
    );
  });

  it("names --map and its text for bad names, tags and duplicates", () => {
    expectInvalid(
      () => configFromFlags({ "catalog-file": "c.json", map: ["web=be web", "x;y=be_x", "api#=be_api", "web2=be_api", "=be_z"] }),
      [
        { path: "--map", message: "BACKEND may contain only letters, digits, '.', '_' and '-'", value: "web=be web" },
        { path: "--map", message: "SERVICE must be 1 to 128 letters, digits, '.', '_' or '-'", value: "x;y=be_x" },
        { path: "--map", message: "TAG must be 1 to 128 letters, digits, '.', '_' or '-'", value: "api#=be_api" },
        { path: "--map", message: "SERVICE must be 1 to 128 letters, digits, '.', '_' or '-'", value: "=be_z" },
        { path: "--map", message: "BACKEND backend mapped twice (first at backends[2])", value: "web2=be_api" },
      ],
      FLAGS,
    );
  });

  it("names --listen, --consul, --consul-dc and --catalog-file, and never echoes the token", () => {
    const error = expectInvalid(
      () => configFromFlags({ listen: "nowhere", consul: "consul:8500", "consul-token": "secret value", "consul-dc": "dc 1", map: ["a=b"] }),
      [
        { path: "--listen", message: "must be HOST:PORT (IPv6 as [::1]:PORT) with a port in 0..65535", value: "nowhere" },
        { path: "--consul", message: "must be an http:// or https:// URL", value: "consul:8500" },
        { path: "--consul-token", message: "must be 1 to 256 visible ASCII characters" },
        { path: "--consul-dc", message: "must be 1 to 128 letters, digits, '.', '_' or '-'", value: "dc 1" },
      ],
      FLAGS,
    );
    expect(error.message).not.toContain("secret");
    expectInvalid(() => configFromFlags({ "catalog-file": "", map: ["a=b"] }), [{ path: "--catalog-file", message: "must not be empty", value: "" }], FLAGS);
  });
});
