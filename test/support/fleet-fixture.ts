import { rm, writeFile } from "node:fs/promises";
import type { AgentRunner } from "../../agent/run/agent-runner.js";
import type { RunningController } from "../../controller/controller.js";
import type { RunningHaproxy } from "./haproxy.js";

/** What a fleet test starts (a controller, agents, HAProxy processes), stopped in that order by `stop()`. */
export class FleetProcesses {
  controller: RunningController | null = null;
  readonly runners: AgentRunner[] = [];
  readonly haproxies: RunningHaproxy[] = [];

  /** Agents first (they would reconnect), then the controller, then HAProxy; then `dir` is removed. */
  async stop(dir: string | undefined): Promise<void> {
    await Promise.all(this.runners.splice(0).map((runner) => runner.stop()));
    await this.controller?.close();
    this.controller = null;
    await Promise.all(this.haproxies.splice(0).map((haproxy) => haproxy.stop()));
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  }
}

/** `n` instances of the test app: 127.0.4.1:8200, 127.0.4.2:8201, ... */
export function appInstances(n: number): Array<{ address: string; port: number }> {
  return Array.from({ length: n }, (_, i) => ({ address: `127.0.4.${i + 1}`, port: 8200 + i }));
}

/** The catalog file the file source reads: `service` has these instances. */
export async function writeCatalog(path: string, servers: ReadonlyArray<{ address: string; port: number }>, service = "web"): Promise<void> {
  await writeFile(path, JSON.stringify({ services: { [service]: servers } }));
}
