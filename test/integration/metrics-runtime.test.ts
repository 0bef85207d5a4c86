import { createServer, type Server } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { InvalidInputError } from "../../agent/errors.js";
import { AgentMetrics, type ServingCount } from "../../agent/metrics/agent-metrics.js";
import type { RunningHttpServer } from "../../agent/metrics/http-endpoint.js";
import { startMetricsServer } from "../../agent/metrics/metrics-server.js";
import { nameSchema } from "../../agent/model/values.js";
import { RuntimeCommand } from "../../agent/runtime/commands.js";
import { RuntimeClient } from "../../agent/runtime/runtime-client.js";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";
import { applyDesired, endpoints, serving, silentLogger } from "../support/apply.js";
import { startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";

let haproxy: RunningHaproxy | undefined;
let client: RuntimeClient | undefined;
let metricsServer: RunningHttpServer | undefined;
let fake: Server | undefined;
afterEach(async () => {
  client?.close();
  await metricsServer?.close();
  await haproxy?.stop();
  await new Promise((resolve) => (fake ? fake.close(resolve) : resolve(undefined)));
  haproxy = client = metricsServer = fake = undefined;
});

/**
 * Speaks HAProxy's interactive mode (the prompt after each reply) on a TCP port, and hangs up
 * instead of answering where `hangUp` says: connections and commands counted from 1. Command 1
 * of each connection is the client's own `show info` (which process answers).
 */
async function fakeHaproxy(hangUp: (connection: number, command: number) => boolean): Promise<string> {
  let connections = 0;
  fake = createServer((socket) => {
    const connection = ++connections;
    let lines = 0;
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      const newlines = chunk.split("\n").length - 1;
      for (let line = 0; line < newlines; line++) {
        // The first line is `prompt`, answered with the prompt alone.
        if (lines > 0 && hangUp(connection, lines)) {
          socket.destroy();
          return;
        }
        socket.write(lines === 0 ? "\n> " : "Name: HAProxy\nVersion: 2.6.12\nPid: 4242\nStopping: 0\n\n> ");
        lines++;
      }
    });
  });
  await new Promise<void>((resolve) => fake!.listen(0, "127.0.0.1", resolve));
  return `127.0.0.1:${(fake.address() as { port: number }).port}`;
}

/** The value of one series, written exactly as the exposition writes it; undefined when absent. */
function value(body: string, series: string): number | undefined {
  const line = body.split("\n").find((candidate) => candidate.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

async function scrape(path = "/metrics", method = "GET"): Promise<{ status: number; contentType: string | null; body: string }> {
  const response = await fetch(`http://127.0.0.1:${metricsServer!.port}${path}`, { method });
  return { status: response.status, contentType: response.headers.get("content-type"), body: await response.text() };
}

describe("the agent's Runtime API metrics", () => {
  it("serve on /metrics the commands an apply sent, a command HAProxy refused, and what HAProxy serves", async () => {
    haproxy = await startHaproxy({ sections: templateBackend("be_app", { slots: 4 }) });
    let counts: ServingCount[] = [];
    const metrics = new AgentMetrics({ serving: () => counts });
    client = new RuntimeClient(parseSocketAddress(haproxy.socket), { observer: metrics });
    metricsServer = await startMetricsServer("127.0.0.1:0", [metrics], silentLogger);

    const report = await applyDesired(haproxy, { be_app: endpoints(3) }, { client });
    expect(report.converged).toBe(true);
    counts = [{ backend: "be_app", socket: haproxy.socket, serving: serving(await haproxy.serversState("be_app"), "be_app").length }];
    const [refused] = await client.run([RuntimeCommand.setState(nameSchema.parse("be_app"), nameSchema.parse("no_such_server"), "ready")]);
    expect(refused!.ok).toBe(false);

    const { status, contentType, body } = await scrape();

    expect(status).toBe(200);
    expect(contentType).toBe("text/plain; version=0.0.4; charset=utf-8");
    // Three slots filled, each with at least its address and `state ready`, plus the refused one.
    expect(value(body, 'hafleet_runtime_commands_total{command="set server"}')).toBeGreaterThanOrEqual(7);
    expect(value(body, 'hafleet_runtime_commands_total{command="show servers state"}')).toBeGreaterThan(0);
    expect(value(body, 'hafleet_runtime_commands_failed_total{command="set server"}')).toBe(1);
    expect(body).not.toContain('hafleet_runtime_commands_failed_total{command="show');
    expect(body).not.toMatch(/command="[^"]*(be_app|srv|127\.0\.)/);
    expect(value(body, 'hafleet_runtime_batches_total{outcome="answered"}')).toBeGreaterThanOrEqual(3);
    expect(value(body, 'hafleet_runtime_batches_total{outcome="failed"}')).toBe(0);
    expect(value(body, "hafleet_runtime_batch_duration_seconds_count")).toBe(value(body, 'hafleet_runtime_batches_total{outcome="answered"}'));
    expect(value(body, `hafleet_agent_serving_servers{backend="be_app",socket="${haproxy.socket}"}`)).toBe(3);
    expect(value(body, "process_resident_memory_bytes")).toBeGreaterThan(0);
  });

  it("counts reads retried on a fresh connection once, by their outcome: a stale connection is routine", async () => {
    // The kept-alive connection dies unseen before the second batch: the client retries the reads.
    const address = await fakeHaproxy((connection, command) => connection === 1 && command === 3);
    const metrics = new AgentMetrics({ serving: () => [] });
    client = new RuntimeClient(parseSocketAddress(address), { observer: metrics });
    await client.run([RuntimeCommand.showInfo()]);
    await expect(client.run([RuntimeCommand.showInfo()])).resolves.toMatchObject([{ ok: true }]);

    const { body } = await metrics.render();
    expect(value(body, 'hafleet_runtime_commands_total{command="show info"}')).toBe(2);
    expect(value(body, 'hafleet_runtime_commands_failed_total{command="show info"}')).toBeUndefined();
    expect(value(body, 'hafleet_runtime_batches_total{outcome="answered"}')).toBe(2);
    expect(value(body, 'hafleet_runtime_batches_total{outcome="failed"}')).toBe(0);
  });

  it("counts every command of a batch whose connection was lost as failed, and nothing when it could not connect", async () => {
    const address = await fakeHaproxy((_connection, command) => command > 1);
    const metrics = new AgentMetrics({ serving: () => [] });
    client = new RuntimeClient(parseSocketAddress(address), { observer: metrics });
    const backend = nameSchema.parse("be_app");
    const server = nameSchema.parse("srv1");

    await expect(client.run([RuntimeCommand.setState(backend, server, "drain"), RuntimeCommand.enableHealth(backend, server)])).rejects.toThrow(/lost after 0 of 2 replies/);
    const unreachable = new RuntimeClient(parseSocketAddress("/nonexistent/hafleet/admin.sock"), { observer: metrics, connectTimeoutMs: 500 });
    await expect(unreachable.run([RuntimeCommand.showInfo()])).rejects.toThrow(/cannot connect/);

    const { body } = await metrics.render();
    expect(value(body, 'hafleet_runtime_batches_total{outcome="failed"}')).toBe(1);
    expect(value(body, 'hafleet_runtime_commands_failed_total{command="set server"}')).toBe(1);
    expect(value(body, 'hafleet_runtime_commands_failed_total{command="enable health"}')).toBe(1);
    expect(value(body, 'hafleet_runtime_commands_total{command="show info"}')).toBeUndefined();
  });
});

describe("the metrics server", () => {
  it("serves GET /metrics only: 404 elsewhere, 405 for another method", async () => {
    const metrics = new AgentMetrics({ serving: () => [] });
    metricsServer = await startMetricsServer("127.0.0.1:0", [metrics], silentLogger);
    expect((await scrape("/")).status).toBe(404);
    expect((await scrape("/metrics/x")).status).toBe(404);
    const post = await scrape("/metrics", "POST");
    expect(post.status).toBe(405);
    expect((await scrape("/metrics?debug=1")).status).toBe(200);
  });

  it("refuses a non-loopback address unless allowRemote is given", async () => {
    const metrics = new AgentMetrics({ serving: () => [] });
    for (const listen of ["0.0.0.0:0", "[::]:0", "10.0.0.1:9100"]) {
      const error = await startMetricsServer(listen, [metrics], silentLogger).catch((caught: unknown) => caught);
      expect(error, listen).toBeInstanceOf(InvalidInputError);
      expect((error as Error).message).toContain("the agent's local endpoints bind loopback only");
    }
    metricsServer = await startMetricsServer("0.0.0.0:0", [metrics], silentLogger, { allowRemote: true });
    expect((await scrape()).status).toBe(200);
  });

  it("answers 500 when a source cannot render, and serves several sources in one exposition", async () => {
    const broken = {
      render: async () => {
        throw new Error("status unavailable");
      },
    };
    metricsServer = await startMetricsServer("127.0.0.1:0", [new AgentMetrics({ serving: () => [] }), broken], silentLogger);
    expect((await scrape()).status).toBe(500);
    await metricsServer.close();

    const extra = { render: async () => ({ contentType: "text/plain; version=0.0.4; charset=utf-8", body: "# TYPE extra_total counter\nextra_total 7\n" }) };
    metricsServer = await startMetricsServer("127.0.0.1:0", [new AgentMetrics({ serving: () => [] }), extra], silentLogger);
    const { body } = await scrape();
    expect(value(body, "extra_total")).toBe(7);
    expect(value(body, "hafleet_agent_pushes_received_total")).toBe(0);
  });
});
