import { join } from "node:path";
import { AgentRunner } from "../../agent/run/agent-runner.js";
import type { Applier } from "../../agent/run/applier.js";
import { silentLogger } from "./apply.js";

/**
 * A real agent run loop in this process, tuned for tests: fast heartbeats, probes and
 * reconnects; resyncs as asked. Started; the caller stops it.
 */
export async function startRunner(options: { id: string; applier: Applier; labels: Record<string, string>; controllerPorts: readonly number[]; stateRoot: string; resyncMs: number; probeMs?: number }): Promise<AgentRunner> {
  const runner = new AgentRunner({
    agentId: options.id,
    labels: options.labels,
    hafleetVersion: "test",
    controllers: options.controllerPorts.map((port) => `127.0.0.1:${port}`),
    applier: options.applier,
    stateDir: join(options.stateRoot, options.id),
    resyncMs: options.resyncMs,
    heartbeatMs: 200,
    deadAfterMs: 2_000,
    probeMs: options.probeMs ?? 100,
    backoff: { initialMs: 20, maxMs: 200 },
    logger: silentLogger,
  });
  await runner.start();
  return runner;
}
