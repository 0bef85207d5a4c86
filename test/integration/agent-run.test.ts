import { createHook, type AsyncHook } from "node:async_hooks";
import { spawn } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";
import { AgentRunner, type AgentRunnerOptions } from "../../agent/run/agent-runner.js";
import { RuntimeApplier, type Applier } from "../../agent/run/applier.js";
import { loadFleetService } from "../../proto/fleet-protocol.js";
import { agentMessageSchema, parseMessage, type AgentMessage, type Hello, type ObservedReport, type PushResponse } from "../../proto/messages.js";
import { serving, silentLogger, summary } from "../support/apply.js";
import { startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";

// A fake controller (a real grpc-js server on 127.0.0.1), the real agent runner in-process,
// and a real HAProxy. Every message the agent sends is validated with the wire schemas, and
// every assertion on HAProxy reads its own `show servers state` through the test harness.

type Body = AgentMessage["body"];
type Payload<K extends Body> = Extract<AgentMessage, { body: K }> extends infer M ? (K extends keyof M ? M[K] : never) : never;

class FakeStream {
  readonly messages: AgentMessage[] = [];
  readonly invalid: string[] = [];
  ended = false;
  private readonly beat: NodeJS.Timeout;

  constructor(
    readonly call: grpc.ServerDuplexStream<unknown, unknown>,
    silent: boolean,
  ) {
    call.on("data", (raw: unknown) => {
      try {
        this.messages.push(parseMessage(agentMessageSchema, raw, "agent message"));
      } catch (error) {
        this.invalid.push((error as Error).message);
      }
    });
    const end = (): void => {
      this.ended = true;
      clearInterval(this.beat);
    };
    call.on("end", end);
    call.on("cancelled", end);
    call.on("error", end);
    call.on("close", end);
    this.beat = setInterval(() => {
      if (!silent && !this.ended) call.write({ heartbeat: { sentAtMs: Date.now() } });
    }, 100);
  }

  /** Observed reports, sent alone or with a push's response, in the order they came. */
  observed(): ObservedReport[] {
    return this.messages.flatMap((message) => (message.body === "observed" ? [message.observed] : message.body === "response" && message.response.observed ? [message.response.observed] : []));
  }

  all<K extends Body>(body: K): Array<Payload<K>> {
    return this.messages.filter((message) => message.body === body).map((message) => (message as unknown as Record<K, Payload<K>>)[body]);
  }

  hello(): Promise<Hello> {
    return until(() => this.all("hello")[0], "a hello");
  }

  response(nonce: string): Promise<PushResponse> {
    return until(() => this.all("response").find((response) => response.nonce === nonce), `the response to ${nonce}`);
  }

  /** Writes a push as the controller would; raw, so that a test can send a malformed one. */
  push(push: Record<string, unknown>): void {
    this.call.write({ push: { version: "set", backends: [], removedBackends: [], ...push } });
  }

  /** Ends the stream with an error status. (A server-side destroy() sends no status at all in grpc-js.) */
  kill(): void {
    if (!this.ended) this.call.emit("error", { code: grpc.status.UNAVAILABLE, details: "killed by the test" });
    this.ended = true;
    clearInterval(this.beat);
  }
}

class FakeController {
  readonly streams: FakeStream[] = [];
  private constructor(
    private readonly server: grpc.Server,
    readonly address: string,
  ) {}

  static async start(port = 0, options: { silent?: boolean } = {}): Promise<FakeController> {
    const server = new grpc.Server();
    const streams: FakeStream[] = [];
    server.addService(loadFleetService().service, {
      Sync: (call: grpc.ServerDuplexStream<unknown, unknown>) => void streams.push(new FakeStream(call, options.silent ?? false)),
    });
    const bound = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (error, actual) => (error ? reject(error) : resolve(actual))),
    );
    const controller = new FakeController(server, `127.0.0.1:${bound}`);
    (controller as { streams: FakeStream[] }).streams = streams;
    controllers.push(controller);
    return controller;
  }

  stream(index: number): Promise<FakeStream> {
    return until(() => this.streams[index], `stream #${index + 1} on ${this.address}`);
  }

  stop(): void {
    for (const stream of this.streams) stream.kill();
    this.server.forceShutdown();
  }
}

const controllers: FakeController[] = [];
const runners: AgentRunner[] = [];
const haproxies: RunningHaproxy[] = [];
const dirs: string[] = [];

afterEach(async () => {
  await Promise.all(runners.splice(0).map((runner) => runner.stop()));
  for (const controller of controllers.splice(0)) controller.stop();
  await Promise.all(haproxies.splice(0).map((h) => h.stop()));
  await Promise.all(dirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
});

async function until<T>(probe: () => T | undefined | Promise<T | undefined>, what: string, timeoutMs = 8_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function haproxy(sections = templateBackend("be_app", { slots: 3 }) + templateBackend("be_other", { slots: 2, balance: "static-rr" })): Promise<RunningHaproxy> {
  const h = await startHaproxy({ sections });
  haproxies.push(h);
  return h;
}

async function stateDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "hafleet-agent-run-"));
  dirs.push(dir);
  return dir;
}

async function agent(h: RunningHaproxy, controllerAddresses: string[], dir: string, options: Partial<AgentRunnerOptions> = {}): Promise<AgentRunner> {
  const runner = new AgentRunner({
    agentId: "edge-1",
    labels: { region: "test", role: "edge" },
    hafleetVersion: "0.1.0",
    controllers: controllerAddresses,
    applier: new RuntimeApplier({ sockets: [parseSocketAddress(h.socket)], stateDir: dir, drainMs: 500, logger: silentLogger }),
    stateDir: dir,
    resyncMs: 60_000,
    heartbeatMs: 100,
    deadAfterMs: 2_000,
    probeMs: 100,
    connectTimeoutMs: 1_000,
    backoff: { initialMs: 20, maxMs: 200 },
    logger: silentLogger,
    ...options,
  });
  runners.push(runner);
  await runner.start();
  return runner;
}

/** A port nothing listens on (until a test starts a controller there). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const app = (n: number) => Array.from({ length: n }, (_, i) => ({ address: `127.0.2.${i + 1}`, port: 8000 + i + 1 }));
const endpoints = (servers: Array<{ address: string; port: number }>) => servers.map((s) => `${s.address}:${s.port}`).sort();
const backend = (name: string, version: string, servers: Array<{ address: string; port: number }>, allowEmpty = false) => ({ name, version, servers, allowEmpty });

async function storedFile(dir: string): Promise<{ backends: Array<{ name: string; version: string; appliedVersion: string }> }> {
  return JSON.parse(await readFile(join(dir, "desired.json"), "utf8")) as { backends: Array<{ name: string; version: string; appliedVersion: string }> };
}

describe("hafleet-agent run, against a fake controller and a real HAProxy", () => {
  it("says hello with its identity and inventory, applies a push and acks it with the nonce", async () => {
    const [h, controller, dir] = await Promise.all([haproxy(), FakeController.start(), stateDir()]);
    const runner = await agent(h, [controller.address], dir);
    const stream = await controller.stream(0);

    expect(await stream.hello()).toEqual({
      agentId: "edge-1",
      labels: { region: "test", role: "edge" },
      hafleetVersion: "0.1.0",
      sockets: [
        {
          socket: h.socket,
          backends: [
            { name: "be_app", slots: 3, serving: 0, dynamic: true },
            { name: "be_other", slots: 2, serving: 0, dynamic: false },
          ],
        },
      ],
      appliedVersions: {},
    });
    expect(stream.messages[0]!.body).toBe("hello");

    stream.push({ nonce: "n1", version: "set-1", backends: [backend("be_app", "app-1", app(2))] });
    // A second push while the first applies waits its turn and gets its own response.
    stream.push({ nonce: "n2", version: "set-2", backends: [backend("be_app", "app-2", app(3))] });
    expect((await stream.response("n1")).results).toEqual([{ backend: "be_app", version: "app-1", error: "", appliedVersion: "app-1" }]);
    expect((await stream.response("n2")).results).toEqual([{ backend: "be_app", version: "app-2", error: "", appliedVersion: "app-2" }]);
    expect(stream.all("response").map((response) => response.nonce)).toEqual(["n1", "n2"]);

    expect(serving(await h.serversState(), "be_app")).toEqual(endpoints(app(3)));
    // What was applied is marked in the file with the next push, or at stop: a restart
    // re-applies the stored state (and marks it) before its hello says what it runs.
    expect((await storedFile(dir)).backends).toMatchObject([{ name: "be_app", version: "app-2", appliedVersion: "app-1" }]);
    const observed = await until(() => stream.observed().find((report) => report.backends[0]?.serving === 3), "an observed report with 3 serving");
    expect(observed.backends).toEqual([{ backend: "be_app", socket: h.socket, digest: expect.stringMatching(/^[0-9a-f]{16}$/), serving: 3, drift: [], repairing: "" }]);
    await until(() => stream.all("heartbeat").length >= 2 || undefined, "heartbeats");
    expect(stream.invalid).toEqual([]);
    await runner.stop();
    expect((await storedFile(dir)).backends).toMatchObject([{ name: "be_app", version: "app-2", appliedVersion: "app-2" }]);
  });

  it("nacks a backend HAProxy lacks, naming the socket and the reason, and still applies the rest", async () => {
    const [h, controller, dir] = await Promise.all([haproxy(), FakeController.start(), stateDir()]);
    await agent(h, [controller.address], dir);
    const stream = await controller.stream(0);
    stream.push({ nonce: "n1", backends: [backend("be_app", "app-1", app(1)), backend("be_missing", "m-1", app(2)), backend("be_other", "o-1", app(3))] });
    const { results } = await stream.response("n1");
    expect(results[0]).toEqual({ backend: "be_app", version: "app-1", error: "", appliedVersion: "app-1" });
    expect(results[1]).toMatchObject({ backend: "be_missing", version: "m-1", appliedVersion: "" });
    expect(results[1]!.error).toBe(`${h.socket}: backend-missing: the backend does not exist in this HAProxy (2 server(s) not placed: 127.0.2.1:8001, 127.0.2.2:8002)`);
    // static-rr takes no `add server`: two slots for three servers.
    expect(results[2]!.error).toBe(`${h.socket}: no-free-slot: every slot is taken and the backend takes no dynamic servers (1 server(s) not placed: 127.0.2.3:8003)`);
    expect(serving(await h.serversState(), "be_app")).toEqual(endpoints(app(1)));
    expect(stream.invalid).toEqual([]);
  });

  it("leaves a removed backend untouched in HAProxy and stops managing it", async () => {
    const [h, controller, dir] = await Promise.all([haproxy(), FakeController.start(), stateDir()]);
    await agent(h, [controller.address], dir, { resyncMs: 200 });
    const stream = await controller.stream(0);
    stream.push({ nonce: "n1", backends: [backend("be_app", "app-1", app(2))] });
    await stream.response("n1");
    const before = summary(await h.serversState(), "be_app");

    stream.push({ nonce: "n2", backends: [], removedBackends: ["be_app"] });
    expect((await stream.response("n2")).results).toEqual([]);
    expect((await storedFile(dir)).backends).toEqual([]);
    // Several resyncs later, still exactly as it was.
    await new Promise((resolve) => setTimeout(resolve, 700));
    expect(summary(await h.serversState(), "be_app")).toEqual(before);
    expect(serving(await h.serversState(), "be_app")).toEqual(endpoints(app(2)));
  });

  it("applies its stored state at start when no controller is reachable", async () => {
    const [h, controller, dir] = await Promise.all([haproxy(), FakeController.start(), stateDir()]);
    const first = await agent(h, [controller.address], dir);
    const stream = await controller.stream(0);
    stream.push({ nonce: "n1", backends: [backend("be_app", "app-1", app(2))] });
    await stream.response("n1");
    await first.stop();
    controller.stop();

    await h.restart();
    expect(serving(await h.serversState(), "be_app")).toEqual([]);
    await agent(h, [`127.0.0.1:${await closedPort()}`], dir);
    // start() resolves once the stored state is applied: no waiting for a controller.
    expect(serving(await h.serversState(), "be_app")).toEqual(endpoints(app(2)));
  });

  it("starts with nothing, the corrupt file moved aside, when the stored state is corrupt", async () => {
    const [h, dir] = await Promise.all([haproxy(), stateDir()]);
    await writeFile(join(dir, "desired.json"), "{ not json");
    await agent(h, [`127.0.0.1:${await closedPort()}`], dir);
    expect((await readdir(dir)).filter((name) => name.startsWith("desired.json.corrupt-"))).toHaveLength(1);
    expect(serving(await h.serversState(), "be_app")).toEqual([]);
  });

  it("reconnects when its stream is killed or its controller dies, to the next address, and says what it runs", async () => {
    const [h, dir] = await Promise.all([haproxy(), stateDir()]);
    const portA = await closedPort();
    const b = await FakeController.start();
    // A is down at first: the agent fails over to B.
    await agent(h, [`127.0.0.1:${portA}`, b.address], dir);
    const first = await b.stream(0);
    expect((await first.hello()).appliedVersions).toEqual({});
    first.push({ nonce: "n1", backends: [backend("be_app", "app-1", app(2))] });
    await first.response("n1");

    const a = await FakeController.start(portA);
    first.kill();
    const second = await a.stream(0);
    expect((await second.hello()).appliedVersions).toEqual({ be_app: "app-1" });
    // A nonce is valid on its stream only: pushes go on the new stream.
    second.push({ nonce: "n2", backends: [backend("be_app", "app-2", app(1))] });
    expect((await second.response("n2")).results[0]!.error).toBe("");

    a.stop();
    const third = await b.stream(1);
    expect((await third.hello()).appliedVersions).toEqual({ be_app: "app-2" });
    // Losing controllers changed nothing in HAProxy.
    expect(serving(await h.serversState(), "be_app")).toEqual(endpoints(app(1)));
    for (const stream of [first, second, third]) expect(stream.invalid).toEqual([]);
  });

  it("gives up on a controller that says nothing, and connects again", async () => {
    const [h, dir] = await Promise.all([haproxy(), stateDir()]);
    const silent = await FakeController.start(0, { silent: true });
    await agent(h, [silent.address], dir, { deadAfterMs: 400 });
    const first = await silent.stream(0);
    await silent.stream(1);
    expect(first.ended).toBe(true);
    expect(first.all("heartbeat").length).toBeGreaterThan(0);
  });

  it("re-applies after HAProxy restarts, reporting it as repairing until it has", async () => {
    const [h, controller, dir] = await Promise.all([haproxy(), FakeController.start(), stateDir()]);
    await agent(h, [controller.address], dir);
    const stream = await controller.stream(0);
    stream.push({ nonce: "n1", backends: [backend("be_app", "app-1", app(2))] });
    await stream.response("n1");
    await until(() => stream.observed().find((report) => report.backends[0]?.serving === 2), "the report after the push");

    const before = stream.observed().length;
    await h.restart();
    await until(async () => serving(await h.serversState(), "be_app").length === 2 || undefined, "HAProxy serving again");
    // Told first that what it reported is void (HAProxy unreachable, or replaced and being
    // repaired: whichever the agent saw first), then what the new process runs.
    const void_ = await until(() => stream.observed().slice(before).find((report: ObservedReport) => report.backends[0]?.repairing || report.backends[0]?.serving === 0), "a report that the old figures are void");
    if (void_.backends[0]!.repairing) expect(void_.backends[0]!.repairing).toMatch(/^HAProxy (reloaded or restarted \(worker \d+ -> \d+\)|reachable again \(worker \d+\))$/);
    const after = stream.observed().indexOf(void_);
    const repaired = await until(() => stream.observed().slice(after + 1).find((report: ObservedReport) => !report.backends[0]?.repairing), "the report after the repair");
    expect(repaired.backends[0]).toMatchObject({ serving: 2, drift: [] });
    expect(serving(await h.serversState(), "be_app")).toEqual(endpoints(app(2)));
  });

  it("nacks a malformed push and lets nothing of it reach HAProxy", async () => {
    const [h, controller, dir] = await Promise.all([haproxy(), FakeController.start(), stateDir()]);
    await agent(h, [controller.address], dir);
    const stream = await controller.stream(0);
    await stream.hello();
    const before = await h.serversState();

    stream.push({ nonce: "bad", backends: [backend("be_app", "app-1", [{ address: "1.2.3.4;show info", port: 80 }]), backend("be_other", "o-1", app(1))] });
    const { results } = await stream.response("bad");
    expect(results.map((result) => [result.backend, result.version, result.appliedVersion])).toEqual([
      ["be_app", "app-1", ""],
      ["be_other", "o-1", ""],
    ]);
    for (const result of results) expect(result.error).toMatch(/^push refused, nothing applied: .*push\.backends\[0\]\.servers\[0\]\.address: must be an IPv4 or IPv6 literal/);
    // One that names no backend cannot be answered: it is ignored, and the next is served.
    stream.push({ nonce: "unanswerable", version: "not a version" });
    stream.push({ nonce: "good", backends: [backend("be_other", "o-2", app(1))] });
    await stream.response("good");
    expect(stream.all("response").map((response) => response.nonce)).toEqual(["bad", "good"]);
    expect(summary(await h.serversState(), "be_app")).toEqual(summary(before, "be_app"));
    expect((await storedFile(dir)).backends.map((b) => b.name)).toEqual(["be_other"]);
  });
});

describe("hafleet-agent run, the command", () => {
  const ROOT = fileURLToPath(new URL("../../", import.meta.url));
  // `npm test` builds dist first; HAFLEET_AGENT_MAIN points at another build.
  const MAIN = process.env["HAFLEET_AGENT_MAIN"] ?? `${ROOT}dist/agent/cli/main.js`;

  it("runs until SIGTERM, then stops cleanly with exit 0", async () => {
    const [h, controller, dir] = await Promise.all([haproxy(), FakeController.start(), stateDir()]);
    const args = ["run", "--controller", controller.address, "--socket", h.socket, "--id", "edge-9", "--label", "zone=a", "--state-dir", dir, "--resync", "1s"];
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, HAFLEET_LOG_LEVEL: "warn" } });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    const exited = new Promise<number | null>((resolve) => child.on("close", resolve));
    try {
      const stream = await controller.stream(0);
      expect(await stream.hello()).toMatchObject({ agentId: "edge-9", labels: { zone: "a" }, hafleetVersion: expect.stringMatching(/^\d+\.\d+\.\d+/) });
      stream.push({ nonce: "n1", backends: [backend("be_app", "app-1", app(1))] });
      expect((await stream.response("n1")).results[0]!.error).toBe("");
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
      expect(stderr).toBe("");
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("refuses bad flags with exit 2", async () => {
    const run = (args: string[]) =>
      new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [MAIN, "run", ...args], { stdio: ["ignore", "ignore", "pipe"] });
        let stderr = "";
        child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
        child.on("close", (code) => resolve({ code, stderr }));
      });
    const base = ["--controller", "127.0.0.1:1", "--socket", "/tmp/none.sock", "--id", "a"];
    expect((await run(base.slice(2))).code).toBe(2);
    expect((await run([...base, "--label", "novalue"])).stderr).toContain("must be KEY=VALUE");
    expect((await run(["--controller", "nope", ...base.slice(2)])).code).toBe(2);
    const badId = await run([...base.slice(0, 4), "--id", "bad id"]);
    expect([badId.code, badId.stderr.includes("--id")]).toEqual([2, true]);
  });
});

/** Timers and sockets created from now until stop(), minus those gone since. */
function trackResources(): { live: Map<number, string>; stop: () => void } {
  const live = new Map<number, string>();
  let tracking = true;
  const hook = createHook({
    init: (id, type) => void (tracking && (type === "Timeout" || type.startsWith("TCP")) && live.set(id, type)),
    destroy: (id) => void live.delete(id),
  }).enable();
  hooks.push(hook);
  return { live, stop: () => void (tracking = false) };
}
const hooks: AsyncHook[] = [];
afterEach(() => hooks.splice(0).forEach((hook) => hook.disable()));

// The Applier seam: a simulated HAProxy behind the real gRPC code.
describe("the Applier seam", () => {
  it("runs the real link over a simulated applier, and stops leaving nothing behind", async () => {
    const dir = await stateDir();
    // Only what is created from here on: earlier tests' harness timers may still be running.
    const tracking = trackResources();
    const controller = await FakeController.start();
    const applied: string[] = [];
    const applier: Applier = {
      apply: async (set) => {
        // Stored before it is applied: what the controller sent survives a crash mid-apply.
        const stored = set.backends.size === 0 ? [] : (await storedFile(dir)).backends.map((b) => `${b.name}@${b.version}`);
        applied.push([[...set.backends.values()].map((b) => `${b.name}@${b.version}`).join(","), stored.join(",")].join(" stored:"));
        return [];
      },
      inventory: async () => [{ socket: "sim", backends: [{ name: "be_sim", slots: 10, serving: 0, dynamic: true }] }],
      workerChanges: async () => [],
      close: () => undefined,
    };
    const runner = new AgentRunner({ agentId: "sim", labels: {}, hafleetVersion: "0", controllers: [controller.address], applier, stateDir: dir, resyncMs: 60_000, heartbeatMs: 100, logger: silentLogger });
    runners.push(runner);
    await runner.start();
    const stream = await controller.stream(0);
    expect((await stream.hello()).sockets).toEqual([{ socket: "sim", backends: [{ name: "be_sim", slots: 10, serving: 0, dynamic: true }] }]);
    stream.push({ nonce: "n1", backends: [backend("be_sim", "s-1", app(3))] });
    expect((await stream.response("n1")).results).toEqual([{ backend: "be_sim", version: "s-1", error: "", appliedVersion: "s-1" }]);
    expect(applied).toEqual([" stored:", "be_sim@s-1 stored:be_sim@s-1"]);

    // stop() leaves nothing running: no timer, no socket (the fake's own go with it).
    await runner.stop();
    controller.stop();
    tracking.stop();
    await until(() => tracking.live.size === 0 || undefined, "every timer and socket to be gone", 2_000).catch(() => undefined);
    expect([...tracking.live.values()]).toEqual([]);
  });
});
