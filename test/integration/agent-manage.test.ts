import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { serializeDesiredSet, type StoredBackend } from "../../agent/run/local-store.js";
import { parseDesiredState } from "../../agent/model/desired-state.js";
import { loadFleetService } from "../../proto/fleet-protocol.js";
import { agentMessageSchema, parseMessage, type AgentMessage, type Hello, type PushResponse } from "../../proto/messages.js";
import { serving } from "../support/apply.js";
import { runAgent } from "../support/cli.js";
import { startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";
import { until } from "../support/helpers.js";
import { AGENT_BIN, startNode, type NodeProcess } from "../support/processes.js";

// `--manage` on a real HAProxy: `hafleet-agent run` (the built program) against a fake
// controller that pushes what a mapping typo would, and `hafleet-agent apply`. What HAProxy runs
// is read with its own `show servers state`, each time on a new connection of the test harness.

/** Servers an operator wrote by hand: no template slot, nothing hafleet placed. */
const HAND_WRITTEN = ["backend be_hand", "    balance roundrobin", "    server web1 127.0.0.1:9001", "    server web2 127.0.0.1:9002 weight 50", ""].join("\n");
const SECTIONS = templateBackend("be_app", { slots: 3 }) + templateBackend("be_api_1", { slots: 2 }) + HAND_WRITTEN;

/** Just enough of a controller: the agent's messages, validated; pushes written as given. */
class FakeController {
  readonly messages: AgentMessage[] = [];
  readonly invalid: string[] = [];
  private call: grpc.ServerDuplexStream<unknown, unknown> | null = null;
  private beat: NodeJS.Timeout | null = null;

  private constructor(
    private readonly server: grpc.Server,
    readonly address: string,
  ) {}

  static async start(): Promise<FakeController> {
    const server = new grpc.Server();
    const opened: Array<(call: grpc.ServerDuplexStream<unknown, unknown>) => void> = [];
    server.addService(loadFleetService().service, { Sync: (call: grpc.ServerDuplexStream<unknown, unknown>) => opened[0]?.(call) });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
    );
    const controller = new FakeController(server, `127.0.0.1:${port}`);
    opened.push((call) => controller.opened(call));
    return controller;
  }

  private opened(call: grpc.ServerDuplexStream<unknown, unknown>): void {
    this.call = call;
    call.on("data", (raw: unknown) => {
      try {
        this.messages.push(parseMessage(agentMessageSchema, raw, "agent message"));
      } catch (error) {
        this.invalid.push((error as Error).message);
      }
    });
    call.on("error", () => undefined);
    // The agent gives up on a controller that says nothing.
    if (this.beat) clearInterval(this.beat);
    this.beat = setInterval(() => call.write({ heartbeat: { sentAtMs: Date.now() } }), 500);
  }

  hello(): Promise<Hello> {
    return until(() => this.messages.flatMap((message) => (message.body === "hello" ? [message.hello] : []))[0], "the agent's hello");
  }

  response(nonce: string): Promise<PushResponse> {
    return until(() => this.messages.flatMap((message) => (message.body === "response" && message.response.nonce === nonce ? [message.response] : []))[0], `the response to ${nonce}`);
  }

  push(nonce: string, backends: Array<{ name: string; version: string; servers: Array<{ address: string; port: number }> }>): void {
    this.call!.write({ push: { nonce, version: nonce, backends: backends.map((backend) => ({ ...backend, allowEmpty: false })), removedBackends: [] } });
  }

  stop(): void {
    if (this.beat) clearInterval(this.beat);
    this.call?.end();
    this.server.forceShutdown();
  }
}

const haproxies: RunningHaproxy[] = [];
const agents: NodeProcess[] = [];
const controllers: FakeController[] = [];
const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(agents.splice(0).map((agent) => agent.kill("SIGKILL")));
  for (const controller of controllers.splice(0)) controller.stop();
  await Promise.all(haproxies.splice(0).map((h) => h.stop()));
  await Promise.all(dirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
});

async function setup(): Promise<{ h: RunningHaproxy; controller: FakeController; stateDir: string }> {
  const [h, controller, stateDir] = await Promise.all([startHaproxy({ sections: SECTIONS }), FakeController.start(), mkdtemp(join(tmpdir(), "hafleet-manage-"))]);
  haproxies.push(h);
  controllers.push(controller);
  dirs.push(stateDir);
  return { h, controller, stateDir };
}

function startAgent(h: RunningHaproxy, controller: FakeController, stateDir: string, manage: string[]): NodeProcess {
  const args = ["run", "--controller", controller.address, "--socket", h.socket, "--id", "edge-1", "--state-dir", stateDir, "--resync", "300ms"];
  const agent = startNode(AGENT_BIN, [...args, ...manage.flatMap((pattern) => ["--manage", pattern])]);
  agents.push(agent);
  return agent;
}

/** What an operator would notice changed on a server: address, port, admin and op state, weight. */
async function servers(h: RunningHaproxy, backend: string): Promise<string[]> {
  const rows = await h.serversState(backend);
  return rows.map((row) => `${row.srv_name} ${row.srv_addr}:${row.srv_port} admin=${row.srv_admin_state} op=${row.srv_op_state} w=${row.srv_uweight}`);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const APP = [
  { address: "127.0.3.1", port: 8001 },
  { address: "127.0.3.2", port: 8002 },
];
const TYPO = [{ address: "127.0.3.9", port: 8009 }];

describe("hafleet-agent run --manage", () => {
  it("nacks a pushed backend it does not manage, naming the list, leaves it untouched, and applies the rest of the push", async () => {
    const { h, controller, stateDir } = await setup();
    const handBefore = await servers(h, "be_hand");
    expect(handBefore).toEqual(["web1 127.0.0.1:9001 admin=0 op=2 w=1", "web2 127.0.0.1:9002 admin=0 op=2 w=50"]);
    const agent = startAgent(h, controller, stateDir, ["be_app", "be_api_*"]);

    // The controller hears only of what it may change here.
    const hello = await controller.hello();
    expect(hello.sockets).toEqual([{ socket: h.socket, backends: [expect.objectContaining({ name: "be_app" }), expect.objectContaining({ name: "be_api_1" })] }]);

    controller.push("n1", [
      { name: "be_hand", version: "hand-1", servers: TYPO },
      { name: "be_app", version: "app-1", servers: APP },
    ]);
    const { results } = await controller.response("n1");
    expect([...results].sort((a, b) => a.backend.localeCompare(b.backend))).toEqual([
      { backend: "be_app", version: "app-1", error: "", appliedVersion: "app-1" },
      { backend: "be_hand", version: "hand-1", error: "not managed on this host (manage: be_app, be_api_*)", appliedVersion: "" },
    ]);
    expect(serving(await h.serversState("be_app"), "be_app")).toEqual(["127.0.3.1:8001", "127.0.3.2:8002"]);
    expect(await servers(h, "be_hand")).toEqual(handBefore);

    // Not stored either, so no resync ever applies it.
    const stored = JSON.parse(await readFile(join(stateDir, "desired.json"), "utf8")) as { backends: Array<{ name: string }> };
    expect(stored.backends.map((backend) => backend.name)).toEqual(["be_app"]);
    await until(() => agent.logs("backend not applied: nack").find((line) => line.backend === "be_hand"), "the nack in the agent's log");
    await sleep(1_000);
    expect(await servers(h, "be_hand")).toEqual(handBefore);
    expect(controller.invalid).toEqual([]);
  });

  it("forgets a stored backend that a narrowed list no longer covers: not applied at start, not claimed in the hello", async () => {
    const { h, controller, stateDir } = await setup();
    const handBefore = await servers(h, "be_hand");
    // Stored while the agent managed everything: then a typo's backend was pushed and applied.
    const stored = (name: string, version: string, servers: typeof APP): StoredBackend => ({ ...parseDesiredState({ backends: [{ name, servers }] }, "test").backends[0]!, version, allowEmpty: false, appliedVersion: version });
    const backends = new Map([
      ["be_app", stored("be_app", "app-1", APP.slice(0, 1))],
      ["be_hand", stored("be_hand", "hand-1", TYPO)],
    ]);
    await writeFile(join(stateDir, "desired.json"), serializeDesiredSet({ version: "set-1", backends }));
    const agent = startAgent(h, controller, stateDir, ["be_app"]);

    expect((await controller.hello()).appliedVersions).toEqual({ be_app: "app-1" });
    expect(serving(await h.serversState("be_app"), "be_app")).toEqual(["127.0.3.1:8001"]);
    expect(agent.logs("stored backends not managed on this host: forgotten, HAProxy left alone")).toEqual([expect.objectContaining({ backends: ["be_hand"], manage: ["be_app"] })]);
    await sleep(1_000);
    expect(await servers(h, "be_hand")).toEqual(handBefore);
  });
});

describe("hafleet-agent apply --manage", () => {
  async function desiredFile(dir: string, backends: Array<{ name: string; servers: typeof APP }>): Promise<string> {
    const file = join(dir, `desired-${Math.random().toString(36).slice(2)}.json`);
    await writeFile(file, JSON.stringify({ version: "v1", backends }));
    return file;
  }

  it("refuses a file naming a backend outside the list, in one line naming both, and applies nothing", async () => {
    const { h, stateDir } = await setup();
    const before = { app: await servers(h, "be_app"), hand: await servers(h, "be_hand") };
    const file = await desiredFile(h.dir, [
      { name: "be_app", servers: APP },
      { name: "be_hand", servers: TYPO },
    ]);
    const result = await runAgent(["apply", "--socket", h.socket, "--desired", file, "--state-dir", stateDir, "--manage", "be_app", "--manage", "be_api_*"]);
    expect(result.code).toBe(2);
    expect(result.stderr.trim().split("\n").at(-1)).toBe(`hafleet-agent apply: ${file}: backends[1].name: not managed on this host (manage: be_app, be_api_*) (got "be_hand")`);
    expect(result.stdout).toBe("");
    expect({ app: await servers(h, "be_app"), hand: await servers(h, "be_hand") }).toEqual(before);
  });

  it("refuses a pattern that matches no backend name, naming the flag", async () => {
    const { h, stateDir } = await setup();
    const file = await desiredFile(h.dir, [{ name: "be_app", servers: APP }]);
    const result = await runAgent(["apply", "--socket", h.socket, "--desired", file, "--state-dir", stateDir, "--manage", "be_app?"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`hafleet-agent apply: --manage: matches no backend: names hold only letters, digits, '.', '_' and '-', never "?"`);
  });

  it("applies a file whose backends are all managed", async () => {
    const { h, stateDir } = await setup();
    const file = await desiredFile(h.dir, [{ name: "be_app", servers: APP }]);
    const result = await runAgent(["apply", "--socket", h.socket, "--desired", file, "--state-dir", stateDir, "--manage", "be_*"]);
    expect([result.code, result.stderr]).toEqual([0, ""]);
    expect(serving(await h.serversState("be_app"), "be_app")).toEqual(["127.0.3.1:8001", "127.0.3.2:8002"]);
  });
});
