import { readFile } from "node:fs/promises";
import { serverEndpoint } from "../../agent/cli/format.js";
import { MasterCli } from "../../agent/hybrid/master-cli.js";
import type { ShowProc } from "../../agent/hybrid/show-proc.js";
import type { ObservedServer } from "../../agent/reconcile/observed-state.js";
import { readObservedState } from "../../agent/reconcile/read-observed.js";
import { RuntimeClient } from "../../agent/runtime/runtime-client.js";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";
import { ApiClient } from "../../controller/cli/api-client.js";

/*
 * What the demo shows, read where it is true: HAProxy's own answer on its admin socket (the
 * same reading as `hafleet-agent show`), its master's `show proc` for reloads, the
 * controller's status API for the agent's sync state, and the logs for what each one did.
 */

export interface HaproxyView {
  /** The backend's servers that take new requests: ready, and up by their health checks. */
  serving: ObservedServer[];
  /** Servers still finishing their requests before maintenance. */
  draining: ObservedServer[];
  /** Every server of the backend, whatever its state. */
  all: ObservedServer[];
}

export interface SyncView {
  /** The agent's state on the backend (`in-sync`, `pending`...), or why there is none. */
  agent: string;
  /** How many servers the controller wants in the backend; null before discovery answered. */
  desiredServers: number | null;
  /** Why the controller held discovery's last answer, or null. */
  held: string | null;
}

export class Observer {
  private readonly runtime: RuntimeClient;
  private readonly master: MasterCli;

  private constructor(
    private readonly backend: string,
    private readonly agentId: string,
    adminSocket: string,
    masterSocket: string,
    private readonly api: ApiClient,
  ) {
    this.runtime = new RuntimeClient(parseSocketAddress(adminSocket));
    this.master = new MasterCli(parseSocketAddress(masterSocket));
  }

  static async open(options: { backend: string; agentId: string; adminSocket: string; masterSocket: string; statusUrl: string }): Promise<Observer> {
    const api = await ApiClient.fromFlags({ url: options.statusUrl });
    return new Observer(options.backend, options.agentId, options.adminSocket, options.masterSocket, api);
  }

  async haproxy(): Promise<HaproxyView> {
    const observed = await readObservedState(this.runtime, "full");
    const all = observed.get(this.backend)?.servers ?? [];
    return {
      all,
      serving: all.filter((server) => server.admin === "ready" && (server.status ?? "").startsWith("UP")),
      draining: all.filter((server) => server.admin === "drain"),
    };
  }

  async sync(): Promise<SyncView> {
    const status = await this.api.status();
    const backend = status.backends.find((entry) => entry.backend === this.backend);
    const agent = status.agents.find((entry) => entry.agent === this.agentId);
    const state = agent === undefined ? "not connected" : !agent.connected ? "disconnected" : (agent.backends.find((entry) => entry.backend === this.backend)?.state ?? "not assigned");
    return { agent: state, desiredServers: backend?.servers ?? null, held: backend?.held ?? null };
  }

  showProc(): Promise<ShowProc> {
    return this.master.showProc();
  }

  close(): void {
    this.runtime.close();
  }
}

export function endpoints(servers: readonly ObservedServer[]): string[] {
  return servers.map(serverEndpoint).sort();
}

/** A hafleet log's JSON lines whose `msg` is `msg` (pino's `time` is epoch milliseconds). */
export async function logLines(file: string, msg: string): Promise<Array<Record<string, unknown>>> {
  const text = await readFile(file, "utf8");
  return text
    .split("\n")
    .slice(0, -1) // after the last newline: a line still being written, or nothing
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((line) => line.msg === msg);
}
