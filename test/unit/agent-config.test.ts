import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentConfigSchema, plaintextWarning, type AgentConfig } from "../../agent/config/agent-config.js";
import { parseConfigText } from "../../agent/config/config-file.js";
import { agentConfigFromFlags, loadAgentConfig, prepareAgent, type RunFlags } from "../../agent/config/load-agent-config.js";
import { UsageError, type InputIssue } from "../../agent/errors.js";
import { loadControllerConfig } from "../../controller/config/load-config.js";
import { caught, expectInvalid } from "../support/helpers.js";

const SOURCE = "agent.yaml";
const DEPLOY_CONFIG = new URL("../../deploy/config/", import.meta.url).pathname;

function yaml(text: string): AgentConfig {
  return parseConfigText(agentConfigSchema, text, "yaml", SOURCE);
}

function refused(text: string, issues: InputIssue[]): void {
  expectInvalid(() => yaml(text), issues, SOURCE);
}

/** A valid file, `extra` appended at top level from line 5 on. */
function yamlWith(extra: string): string {
  return ["controllers: [127.0.0.1:7900]", "sockets:", "  - /run/haproxy/admin.sock", "id: edge-1", extra].join("\n");
}

const FULL_YAML = `controllers:
  - ctl-1.internal:7900
  - "[2001:db8::1]:7900"
sockets: [/run/haproxy/admin.sock]
id: edge-7
labels: { region: eu-west-1, role: edge }
tls: { ca: /etc/hafleet/tls/ca.crt, cert: /etc/hafleet/tls/edge-7.crt, key: /etc/hafleet/tls/edge-7.key }
stateDir: /srv/hafleet
drainPeriod: 2s
resync: 1m
logLevel: debug
hybrid:
  configTemplate: /etc/hafleet/haproxy.cfg.njk
  configOut: /etc/haproxy/haproxy.cfg
  stateFile: /var/lib/haproxy/server-state
  masterSocket: /run/haproxy/master.sock
  spareSlots: 2
  vars: { bind: ":8080", defaultBackend: be_app }
`;

const FULL: AgentConfig = {
  controllers: ["ctl-1.internal:7900", "[2001:db8::1]:7900"],
  sockets: ["/run/haproxy/admin.sock"],
  id: "edge-7",
  labels: { region: "eu-west-1", role: "edge" },
  tls: { ca: "/etc/hafleet/tls/ca.crt", cert: "/etc/hafleet/tls/edge-7.crt", key: "/etc/hafleet/tls/edge-7.key" },
  stateDir: "/srv/hafleet",
  drainPeriod: 2000,
  resync: 60000,
  logLevel: "debug",
  hybrid: {
    configTemplate: "/etc/hafleet/haproxy.cfg.njk",
    configOut: "/etc/haproxy/haproxy.cfg",
    stateFile: "/var/lib/haproxy/server-state",
    masterSocket: "/run/haproxy/master.sock",
    spareSlots: 2,
    vars: { bind: ":8080", defaultBackend: "be_app" },
  },
};

describe("agent config: valid files", () => {
  it("applies every default to a minimal file", () => {
    expect(yaml(yamlWith(""))).toEqual({
      controllers: ["127.0.0.1:7900"],
      sockets: ["/run/haproxy/admin.sock"],
      id: "edge-1",
      labels: {},
      stateDir: "/var/lib/hafleet",
      drainPeriod: 5000,
      resync: 10000,
    });
  });

  it("reads every field, durations in any unit", () => {
    expect(yaml(FULL_YAML)).toEqual(FULL);
  });

  it("reads the same settings from JSON", () => {
    const text = JSON.stringify({ ...FULL, drainPeriod: "2s", resync: 60000 }, null, 2);
    expect(parseConfigText(agentConfigSchema, text, "json", "agent.json")).toEqual(FULL);
  });

  it("takes this host's name as the id when none is given, and a drain period of 0", () => {
    const config = yaml(yamlWith("drainPeriod: 0").replace("id: edge-1", ""));
    expect([config.id, config.drainPeriod]).toEqual([hostname(), 0]);
  });

  it("takes TCP admin sockets and several sockets outside hybrid mode", () => {
    expect(yaml(yamlWith("").replace("  - /run/haproxy/admin.sock", "  - /run/haproxy/a.sock\n  - 127.0.0.1:9999")).sockets).toEqual(["/run/haproxy/a.sock", "127.0.0.1:9999"]);
  });
});

describe("agent config: refused, naming the field and its line", () => {
  it("refuses unknown fields at every level, at the key", () => {
    refused(yamlWith("socket: /x\nhybrid:\n  configTemplate: t\n  configOut: o\n  stateFile: s\n  masterSocket: /m\n  reload: always"), [
      { path: "socket", message: "line 5:1: unknown field" },
      { path: "hybrid.reload", message: "line 11:3: unknown field" },
    ]);
  });

  it("names each bad value with its line and column", () => {
    const text = [
      "controllers: [ctl-1:7900, nope]", // 1
      "sockets:", // 2
      "  - /run/haproxy/admin.sock", // 3
      "  - host:99999", // 4
      "id: bad id", // 5
      "labels: { region: eu west }", // 6
      "drainPeriod: 5 seconds", // 7
      "resync: 0", // 8
      "logLevel: loud", // 9
    ].join("\n");
    refused(text, [
      { path: "controllers[1]", message: "line 1:27: must be HOST:PORT or [IPv6]:PORT with a port in 1..65535", value: "nope" },
      { path: "sockets[1]", message: "line 4:5: must be a unix socket path or HOST:PORT with a port in 1..65535", value: "host:99999" },
      { path: "id", message: "line 5:5: must be 1-128 letters, digits, '.', '_' or '-'", value: "bad id" },
      { path: "labels.region", message: "line 6:19: label values are up to 63 letters, digits, '.', '_' or '-'", value: "eu west" },
      { path: "drainPeriod", message: "line 7:14: must be a duration: milliseconds, or a string like 500ms, 5s or 2m", value: "5 seconds" },
      { path: "resync", message: "line 8:9: must be at least 1 ms", value: 0 },
      { path: "logLevel", message: 'line 9:11: Invalid option: expected one of "fatal"|"error"|"warn"|"info"|"debug"|"trace"|"silent"', value: "loud" },
    ]);
  });

  it("places a missing field at its parent, where it has to be added", () => {
    refused("sockets: [/a.sock]\nid: x\n", [{ path: "controllers", message: "line 1:1: Invalid input: expected array, received undefined" }]);
    refused("controllers: []\nsockets: [/a.sock]\n", [{ path: "controllers", message: "line 1:14: must list at least one controller", value: [] }]);
  });

  it("refuses a hybrid block with two sockets, and template variables the template cannot take", () => {
    const hybrid = "hybrid:\n  configTemplate: t\n  configOut: o\n  stateFile: s\n  masterSocket: /m\n  vars:\n    backends: x\n    9lives: y";
    refused(yamlWith(hybrid).replace("  - /run/haproxy/admin.sock", "  - /a.sock\n  - /b.sock"), [
      { path: "sockets", message: "line 3:3: hybrid mode manages one HAProxy (one config file): list one socket", value: ["/a.sock", "/b.sock"] },
      { path: "hybrid.vars.backends", message: "line 12:15: is reserved for the rendered backends", value: "x" },
      { path: "hybrid.vars.9lives", message: "line 13:13: a variable name is letters, digits and '_', not starting with a digit", value: "y" },
    ]);
  });

  it("refuses a template variable value a config line cannot hold", () => {
    refused(yamlWith("hybrid: { configTemplate: t, configOut: o, stateFile: s, masterSocket: /m, vars: { bind: 'a # b' } }"), [
      { path: "hybrid.vars.bind", message: "line 5:90: must not hold a line break, a control character or '#'", value: "a # b" },
    ]);
  });

  it("refuses text that is not YAML, or a second document", () => {
    refused("controllers: [a:1\n", [{ path: "", message: expect.stringMatching(/^line 2:1: not valid YAML: /) }]);
    refused(`${yamlWith("")}\n---\nid: other\n`, [{ path: "", message: expect.stringMatching(/^line 6:1: not valid YAML: /) }]);
  });
});

describe("agent config: plaintext only on loopback", () => {
  const remote = (extra: string) => yamlWith(extra).replace("127.0.0.1:7900", "127.0.0.1:7900, ctl-2.internal:7900");

  it("refuses plaintext to a controller off loopback, naming it", () => {
    refused(remote(""), [
      {
        path: "controllers[1]",
        message: "line 1:31: needs tls (ca, cert, key) or insecure: true, since it is not a loopback address: anyone in the path could push any desired state",
        value: "ctl-2.internal:7900",
      },
    ]);
  });

  it("takes it with tls, or with insecure: true, which warns", () => {
    const tls = yaml(remote("tls: { ca: ca.crt, cert: edge-1.crt, key: edge-1.key }"));
    expect(plaintextWarning(tls)).toBeNull();
    const insecure = yaml(remote("insecure: true"));
    expect(plaintextWarning(insecure)).toBe("insecure: plaintext to the controller ctl-2.internal:7900: anyone in the path could push any desired state");
    expect(plaintextWarning(yaml(yamlWith("insecure: true")))).toBeNull();
  });

  it("refuses tls and insecure together", () => {
    refused(yamlWith("tls: { ca: ca.crt, cert: edge-1.crt, key: edge-1.key }\ninsecure: true"), [{ path: "insecure", message: "line 6:11: contradicts the tls block: remove one of them", value: true }]);
  });

  it("names the flag when the command line asks for plaintext off loopback", () => {
    expectInvalid(
      () => agentConfigFromFlags({ controller: ["[2001:db8::1]:7900"], socket: ["/run/haproxy/admin.sock"], id: "edge-1" }),
      // In flag words: a flag user is told --insecure, not the config file's `insecure: true`.
      [{ path: "--controller", message: "needs --tls-ca, --tls-cert and --tls-key, or --insecure, since it is not a loopback address: anyone in the path could push any desired state", value: "[2001:db8::1]:7900" }],
      "command line",
    );
    expect(agentConfigFromFlags({ controller: ["[2001:db8::1]:7900"], socket: ["/run/haproxy/admin.sock"], id: "edge-1", insecure: true }).insecure).toBe(true);
  });
});

describe("agent config files on disk", () => {
  let dir = "";
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "hafleet-agent-config-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("makes relative paths relative to the file, not to where the agent started", async () => {
    const file = join(dir, "agent.yml");
    await writeFile(file, "controllers: [127.0.0.1:1]\nsockets: [run/admin.sock]\nid: a\nstateDir: state\nhybrid: { configTemplate: t.njk, configOut: ../out.cfg, stateFile: /abs/s, masterSocket: run/master.sock }\n");
    const config = await loadAgentConfig(file);
    expect(config.sockets).toEqual([join(dir, "run/admin.sock")]);
    expect(config.stateDir).toBe(join(dir, "state"));
    expect(config.hybrid).toMatchObject({ configTemplate: join(dir, "t.njk"), configOut: join(dir, "../out.cfg"), stateFile: "/abs/s", masterSocket: join(dir, "run/master.sock") });
  });

  it("leaves a TCP socket as it is", async () => {
    const file = join(dir, "tcp.json");
    await writeFile(file, JSON.stringify({ controllers: ["127.0.0.1:1"], sockets: ["/abs/admin.sock", "127.0.0.1:9000"], id: "a" }));
    expect((await loadAgentConfig(file)).sockets).toEqual(["/abs/admin.sock", "127.0.0.1:9000"]);
  });

  it("refuses a file it cannot read or whose name says no format, naming the file", async () => {
    const missing = join(dir, "missing.yaml");
    await expect(loadAgentConfig(missing)).rejects.toMatchObject({ source: missing, issues: [{ path: "", message: expect.stringMatching(/^cannot read the file: ENOENT/) }] });
    const conf = join(dir, "agent.conf");
    await writeFile(conf, yamlWith(""));
    await expect(loadAgentConfig(conf)).rejects.toMatchObject({ source: conf, issues: [{ path: "", message: "a config file must be named *.yaml, *.yml or *.json" }] });
  });

  it("refuses, before anything runs, a hybrid template that cannot be read", async () => {
    const config = yaml(yamlWith(`hybrid: { configTemplate: ${join(dir, "none.njk")}, configOut: o, stateFile: s, masterSocket: /m }`));
    await expect(prepareAgent(config)).rejects.toMatchObject({
      code: "HAFLEET_INVALID_INPUT",
      issues: [{ path: "hybrid.configTemplate", message: expect.stringContaining(`${join(dir, "none.njk")}: cannot read the template`) }],
    });
  });

  it("has a valid example in the README", async () => {
    const readme = await readFile(new URL("../../README.md", import.meta.url), "utf8");
    const example = /```yaml\n(controllers:[\s\S]*?)```/.exec(readme)?.[1];
    expect(example).toBeDefined();
    expect(parseConfigText(agentConfigSchema, example!, "yaml", "README.md")).toMatchObject({ controllers: ["ctl-1:7900", "ctl-2:7900"], id: "edge-1", drainPeriod: 5000 });
  });

  it("ships default configuration files that are valid", async () => {
    const agent = await loadAgentConfig(join(DEPLOY_CONFIG, "agent.yaml"));
    expect(agent).toMatchObject({ controllers: ["127.0.0.1:7900"], sockets: ["/run/haproxy/admin.sock"], stateDir: "/var/lib/hafleet", id: hostname() });
    const controller = await loadControllerConfig(join(DEPLOY_CONFIG, "controller.yaml"));
    expect(controller.backends.map((mapping) => mapping.backend)).toEqual(["be_app"]);
  });
});

describe("agent config from run's flags", () => {
  const base: RunFlags = { controller: ["ctl-1:7900"], socket: ["/run/haproxy/admin.sock"], id: "edge-1" };

  it("gives what the same settings in a file give", () => {
    const flags: RunFlags = {
      controller: ["ctl-1.internal:7900", "[2001:db8::1]:7900"],
      socket: ["/run/haproxy/admin.sock"],
      id: "edge-7",
      label: ["region=eu-west-1", "role=edge"],
      "state-dir": "/srv/hafleet",
      "drain-period": "2s",
      resync: "1m",
      "config-template": "/etc/hafleet/haproxy.cfg.njk",
      "config-out": "/etc/haproxy/haproxy.cfg",
      "state-file": "/var/lib/haproxy/server-state",
      "master-socket": "/run/haproxy/master.sock",
      "spare-slots": "2",
      var: ["bind=:8080", "defaultBackend=be_app"],
      "tls-ca": "/etc/hafleet/tls/ca.crt",
      "tls-cert": "/etc/hafleet/tls/edge-7.crt",
      "tls-key": "/etc/hafleet/tls/edge-7.key",
    };
    const { logLevel: _fileOnly, ...fromFile } = FULL;
    expect(agentConfigFromFlags(flags)).toEqual(fromFile);
  });

  it("names the flag, and the value given, in every issue", () => {
    expectInvalid(
      () => agentConfigFromFlags({ ...base, controller: ["ok:1", "nope"], id: "bad id", "drain-period": "soon", "state-dir": "" }),
      [
        { path: "--controller", message: "must be HOST:PORT or [IPv6]:PORT with a port in 1..65535", value: "nope" },
        { path: "--id", message: "must be 1-128 letters, digits, '.', '_' or '-'", value: "bad id" },
        { path: "--state-dir", message: "must not be empty", value: "" },
        { path: "--drain-period", message: "must be a duration: milliseconds, or a string like 500ms, 5s or 2m", value: "soon" },
      ],
      "command line",
    );
    expectInvalid(() => agentConfigFromFlags({ ...base, label: ["zone", "a=1", "a=2"] }), [
      { path: "--label", message: "must be KEY=VALUE", value: "zone" },
      { path: "--label", message: "a given twice", value: "a=2" },
    ], "command line");
  });

  it("refuses hybrid mode with two sockets, and a partial set of hybrid flags", () => {
    const hybrid: RunFlags = { "config-template": "t", "config-out": "o", "state-file": "s", "master-socket": "/m" };
    expectInvalid(() => agentConfigFromFlags({ ...base, ...hybrid, socket: ["/a", "/b"] }), [
      { path: "--socket", message: "hybrid mode manages one HAProxy (one config file): list one socket", value: ["/a", "/b"] },
    ], "command line");
    const partial = caught(() => agentConfigFromFlags({ ...base, "config-template": "t" }));
    expect(partial).toBeInstanceOf(UsageError);
    expect((partial as Error).message).toContain("missing --config-out, --state-file, --master-socket");
  });
});
