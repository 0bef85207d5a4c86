import { fleetStatusSchema, type AgentBackendStatus, type FleetStatus } from "../../controller/status/status-schema.js";

/** The controller's status API (`query`: `?agent=...`), validated; throws unless it answers 200. */
export async function readStatus(httpPort: number, query = ""): Promise<FleetStatus> {
  // Bounded: a controller stopped by SIGSTOP or killed mid-answer must not hang the test.
  const response = await fetch(`http://127.0.0.1:${httpPort}/api/v1/status${query}`, { signal: AbortSignal.timeout(10_000) });
  if (response.status !== 200) throw new Error(`status API answered ${response.status}: ${await response.text()}`);
  return fleetStatusSchema.parse(await response.json());
}

/** As readStatus, undefined while the controller does not answer (not up yet, or killed). */
export async function fetchStatus(httpPort: number, query = ""): Promise<FleetStatus | undefined> {
  try {
    return await readStatus(httpPort, query);
  } catch {
    return undefined;
  }
}

/** One agent's view of one backend in a status, with whether its stream is connected. */
export function agentBackend(status: FleetStatus | undefined, agent: string, backend: string): (AgentBackendStatus & { connected: boolean }) | undefined {
  const entry = status?.agents.find((candidate) => candidate.agent === agent);
  const found = entry?.backends.find((candidate) => candidate.backend === backend);
  return entry && found ? { ...found, connected: entry.connected } : undefined;
}
