import { fleetStatusSchema, type AgentBackendStatus, type FleetStatus } from "../../controller/status/status-schema.js";

/** The controller's status API as scripts read it, validated; undefined while it does not answer. */
export async function fetchStatus(httpPort: number): Promise<FleetStatus | undefined> {
  try {
    const response = await fetch(`http://127.0.0.1:${httpPort}/api/v1/status`);
    return fleetStatusSchema.parse(await response.json());
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
