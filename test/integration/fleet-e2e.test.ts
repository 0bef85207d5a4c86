import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AgentApi, instance, startConsulEmulator, type ConsulEmulator } from "../consul-emulator/consul-emulator.js";
import { serving } from "../support/apply.js";
import { freePort, startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";
import { AGENT_BIN, CONTROLLER_BIN, startNode, type NodeProcess } from "../support/processes.js";

// The whole system as an operator runs it: the `hafleet controller` and `hafleet-agent run`
// programs, Consul's API (emulated), and a real HAProxy whose own `show servers state` is
// the only thing asserted on.

const processes: NodeProcess[] = [];
let haproxy: RunningHaproxy | undefined;
let consul: ConsulEmulator | undefined;
afterEach(async () => {
  await Promise.all(processes.splice(0).map((p) => p.kill("SIGKILL")));
  await haproxy?.stop();
  await consul?.close();
  haproxy = consul = undefined;
});

const POLL = { timeout: 10_000, interval: 100 };

async function setup(slots = 4) {
  consul = await startConsulEmulator();
  haproxy = await startHaproxy({ sections: templateBackend("be_app", { slots }) + templateBackend("be_other", { slots: 1 }) });
  const port = await freePort();
  const api = new AgentApi(consul.url);
  const controllerArgs = ["controller", "--listen", `127.0.0.1:${port}`, "--consul", consul.url, "--map", "web=be_app"];
  const agentArgs = (controllers: string[]) => [
    "run",
    ...controllers.flatMap((address) => ["--controller", address]),
    "--socket",
    haproxy!.socket,
    "--id",
    "edge-1",
    "--label",
    "region=eu",
    "--state-dir",
    join(haproxy!.dir, "agent-state"),
    "--drain-period",
    "500ms",
    "--resync",
    "1s",
  ];
  const startController = (args = controllerArgs) => {
    const p = startNode(CONTROLLER_BIN, args);
    processes.push(p);
    return p;
  };
  const startAgent = (controllers = [`127.0.0.1:${port}`]) => {
    const p = startNode(AGENT_BIN, agentArgs(controllers));
    processes.push(p);
    return p;
  };
  const servingNow = async () => serving(await haproxy!.serversState(), "be_app");
  return { api, port, controllerArgs, startController, startAgent, servingNow };
}

describe("controller, agent, Consul and HAProxy together", () => {
  it("follows Consul: registrations, a failing check and a deregistration reach HAProxy", async () => {
    const { api, startController, startAgent, servingNow } = await setup();
    await api.register(instance("web-1", "web", "127.0.0.11", 8001));
    await api.register(instance("web-2", "web", "127.0.0.12", 8002));
    startController();
    startAgent();
    await expect.poll(servingNow, POLL).toEqual(["127.0.0.11:8001", "127.0.0.12:8002"]);

    await api.register(instance("web-3", "web", "127.0.0.13", 8003));
    await expect.poll(servingNow, POLL).toEqual(["127.0.0.11:8001", "127.0.0.12:8002", "127.0.0.13:8003"]);

    await api.fail("service:web-2");
    await expect.poll(servingNow, POLL).toEqual(["127.0.0.11:8001", "127.0.0.13:8003"]);

    await api.deregister("web-1");
    await expect.poll(servingNow, POLL).toEqual(["127.0.0.13:8003"]);
  });

  it("keeps serving through a Consul outage and an empty answer, and catches up after", async () => {
    const { api, startController, startAgent, servingNow } = await setup();
    await api.register(instance("web-1", "web", "127.0.0.11", 8001));
    await api.register(instance("web-2", "web", "127.0.0.12", 8002));
    const controller = startController();
    startAgent();
    await expect.poll(servingNow, POLL).toEqual(["127.0.0.11:8001", "127.0.0.12:8002"]);

    // An empty answer (a Consul bug, an ACL token that sees nothing): held, nothing removed.
    consul!.respondWith("[]", { times: 3, service: "web" });
    await api.register(instance("web-3", "web", "127.0.0.13", 8003));
    await expect.poll(() => controller.logs("discovery answer held: the last good set stands").length, POLL).toBeGreaterThan(0);
    expect(await servingNow()).toEqual(expect.arrayContaining(["127.0.0.11:8001", "127.0.0.12:8002"]));

    // Errors for a while: the last good state stands; then Consul recovers and the change lands.
    consul!.failNext(3, 500);
    await api.register(instance("web-4", "web", "127.0.0.14", 8004));
    await expect.poll(() => controller.logs("discovery failed; the last good state stands, retrying").length, POLL).toBeGreaterThan(0);
    expect(await servingNow()).toEqual(expect.arrayContaining(["127.0.0.11:8001", "127.0.0.12:8002"]));
    await expect.poll(servingNow, POLL).toEqual(["127.0.0.11:8001", "127.0.0.12:8002", "127.0.0.13:8003", "127.0.0.14:8004"]);
  });

  it("survives the controller being killed: HAProxy keeps serving, the agent re-syncs with the new one", async () => {
    const { api, startController, startAgent, servingNow } = await setup();
    await api.register(instance("web-1", "web", "127.0.0.11", 8001));
    const first = startController();
    const agent = startAgent();
    await expect.poll(servingNow, POLL).toEqual(["127.0.0.11:8001"]);

    await first.kill("SIGKILL");
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(await servingNow()).toEqual(["127.0.0.11:8001"]);

    const second = startController();
    await expect.poll(() => second.logs("agent connected").length, POLL).toBe(1);
    // The agent said what it runs: the new controller sends it nothing.
    expect(second.logs("push")).toEqual([]);
    await api.register(instance("web-2", "web", "127.0.0.12", 8002));
    await expect.poll(servingNow, POLL).toEqual(["127.0.0.11:8001", "127.0.0.12:8002"]);
    expect(agent.child.exitCode).toBeNull();
  });

  it("restarted without any controller, the agent applies its stored state", async () => {
    const { api, startController, startAgent, servingNow } = await setup();
    await api.register(instance("web-1", "web", "127.0.0.11", 8001));
    await api.register(instance("web-2", "web", "127.0.0.12", 8002));
    const controller = startController();
    const agent = startAgent();
    await expect.poll(servingNow, POLL).toEqual(["127.0.0.11:8001", "127.0.0.12:8002"]);

    await agent.kill("SIGKILL");
    await controller.kill("SIGKILL");
    await haproxy!.restart();
    expect(await servingNow()).toEqual([]);

    startAgent([`127.0.0.1:${await freePort()}`]);
    await expect.poll(servingNow, POLL).toEqual(["127.0.0.11:8001", "127.0.0.12:8002"]);
  });

  it("reports a nack once and does not resend it in a loop", async () => {
    const { api, port, startController, startAgent } = await setup();
    await api.register(instance("web-1", "web", "127.0.0.11", 8001));
    const controller = startController(["controller", "--listen", `127.0.0.1:${port}`, "--consul", consul!.url, "--map", "web=be_missing"]);
    startAgent();
    await expect.poll(() => controller.logs("nack: held until this backend's desired state changes").length, POLL).toBe(1);
    const nack = controller.logs("nack: held until this backend's desired state changes")[0]!;
    expect(nack.backend).toBe("be_missing");
    expect(String(nack.error)).toMatch(/backend-missing|does not have/);
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    expect(controller.logs("push")).toHaveLength(1);
    expect(controller.logs("nack: held until this backend's desired state changes")).toHaveLength(1);
  });
});
