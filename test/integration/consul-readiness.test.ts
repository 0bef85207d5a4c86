import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import type { AgentRunner } from "../../agent/run/agent-runner.js";
import { controllerConfigSchema } from "../../controller/config/controller-config.js";
import { startController, type RunningController } from "../../controller/controller.js";
import { ConsulSource } from "../../controller/discovery/consul/consul-source.js";
import { AgentApi, instance, startConsulEmulator, type ConsulEmulator } from "../consul-emulator/consul-emulator.js";
import { silentLogger } from "../support/apply.js";
import { until } from "../support/helpers.js";
import { startRunner } from "../support/runner.js";
import { SimulatedApplier } from "../support/simulated-applier.js";

// The fleet must not wait on its weakest service: a service whose reads fail for good (here a
// token that cannot read it, so Consul filters it out) holds back no other backend. After the
// bounded wait, what answered goes out; the agent keeps what it runs of the failing one; the
// failure is told once as a configuration problem; the backend joins as soon as it answers.

const ROOT = "root-token-0123456789";
const READER = "reader-token-0123456789";
let dir: string;
let consul: ConsulEmulator;
const controllers: RunningController[] = [];
const runners: AgentRunner[] = [];

afterEach(async () => {
  await Promise.all(runners.splice(0).map((runner) => runner.stop()));
  await Promise.all(controllers.splice(0).map((controller) => controller.close()));
  await consul.close();
  await rm(dir, { recursive: true, force: true });
});

interface LogLine {
  level: number;
  msg: string;
  service?: string;
  backends?: string[];
}

async function controller(token: string, listen: string, logs: LogLine[] = []): Promise<RunningController> {
  const config = controllerConfigSchema.parse({
    listen,
    http: { listen: null },
    discovery: { consul: { address: consul.url, token, readyWaitMs: 300, configurationRetryMs: 200, wait: 2_000 } },
    backends: [
      { backend: "be_web", service: "web" },
      { backend: "be_pay", service: "pay" },
    ],
    debounce: { quietMs: 20, maxMs: 200 },
    agents: { heartbeatMs: 200, deadAfterMs: 1_000 },
  });
  const logger = pino({ level: "info" }, { write: (line: string) => logs.push(JSON.parse(line) as LogLine) });
  const running = await startController(config, logger, { version: "test" });
  controllers.push(running);
  return running;
}

const endpoints = (applier: SimulatedApplier, backend: string): string[] => applier.serving(backend).map((server) => `${server.address}:${server.port}`).sort();

describe("readiness per backend, not all-or-nothing", () => {
  it("pushes what answered after the wait, keeps the failing backend at the agent, says why once, and adds it when it answers", async () => {
    dir = await mkdtemp(join(tmpdir(), "hafleet-readiness-"));
    consul = await startConsulEmulator({ token: ROOT, readTokens: { [READER]: ["web"] } });
    const api = new AgentApi(consul.url, ROOT);
    await api.register(instance("web-1", "web", "10.1.0.1", 80));
    await api.register(instance("pay-1", "pay", "10.2.0.1", 80));

    // A first controller that reads both: the agent runs both backends.
    const first = await controller(ROOT, "127.0.0.1:0");
    const applier = new SimulatedApplier(["be_web", "be_pay"]);
    runners.push(await startRunner({ id: "lb-1", applier, labels: {}, controllerPorts: [first.port], stateRoot: dir, resyncMs: 60_000 }));
    await until(() => endpoints(applier, "be_pay").length === 1 && endpoints(applier, "be_web").length === 1, "the agent running both backends");
    const port = first.port;
    await controllers.splice(0).pop()!.close();

    // While no controller runs, web grows. The next controller's token cannot read pay.
    await api.register(instance("web-2", "web", "10.1.0.2", 80));
    const logs: LogLine[] = [];
    const second = await controller(READER, `127.0.0.1:${port}`, logs);
    await until(() => endpoints(applier, "be_web").length === 2 || undefined, "web's change pushed although pay never answered", 10_000);
    // pay was not removed: the agent keeps what it ran.
    expect(endpoints(applier, "be_pay")).toEqual(["10.2.0.1:80"]);
    expect(second.store.pending()).toEqual(["be_pay"]);
    expect(logs.some((line) => line.msg.includes("has not answered") && JSON.stringify(line.backends) === JSON.stringify(["be_pay"]))).toBe(true);

    // Told once, as a configuration problem, although retried every 200 ms.
    await new Promise((resolve) => setTimeout(resolve, 700));
    const problems = logs.filter((line) => line.service === "pay" && line.level >= 50);
    expect(problems).toHaveLength(1);
    expect(problems[0]!.msg).toMatch(/configuration problem: the token lacks service:read or node:read/);
    // The controller echoes the listener's one error once; nothing repeats at each retry.
    expect(logs.filter((line) => line.service === "pay" && line.level === 40).length).toBeLessThanOrEqual(1);

    // The operator grants the token; pay joins at the next retry, with its new instance.
    await api.register(instance("pay-2", "pay", "10.2.0.2", 80));
    consul.grant(READER, "pay");
    await until(() => endpoints(applier, "be_pay").length === 2 || undefined, "pay joining once it answers", 10_000);
    expect(second.store.pending()).toEqual([]);
  });

  it("says per watch whether it answered, waits, or fails, with the error and whether it is a configuration problem", async () => {
    dir = await mkdtemp(join(tmpdir(), "hafleet-readiness-"));
    consul = await startConsulEmulator({ datacenter: "dc1" });
    const api = new AgentApi(consul.url);
    await api.register(instance("web-1", "web", "10.1.0.1", 80));
    const source = new ConsulSource({ address: consul.url, wait: 1_000, configurationRetryMs: 60_000, logger: silentLogger });
    try {
      consul.failNext(1_000, 500, "No path to datacenter", { target: "far" });
      const noop = { snapshot: () => {}, error: () => {} };
      source.watch("web", null, noop);
      source.watch("far", null, noop);
      await until(() => source.health().every((health) => health.state !== "pending") || undefined, "both watches past pending");
      const byKey = new Map(source.health().map((health) => [health.key, health]));
      expect(byKey.get("web")).toMatchObject({ state: "ok", error: null, failure: null });
      expect(byKey.get("far")).toMatchObject({ state: "failing", failure: "configuration", hint: "no such datacenter: check `dc`" });
      expect(byKey.get("far")!.error).toContain("No path to datacenter");
      // Retried slowly: one query, not a backoff series.
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(consul.healthQueryCount("far")).toBe(1);
    } finally {
      await source.close();
    }
  });
});
