import { createHash } from "node:crypto";
import type { DesiredServer } from "../../agent/model/desired-state.js";
import { endpointKey } from "../../agent/model/values.js";

/**
 * Versions are derived from content, never counted: any controller replica computes the same
 * version for the same servers, and a restarted controller sends an agent nothing it already has.
 */
export function backendVersion(servers: readonly DesiredServer[], allowEmpty: boolean): string {
  const lines = servers.map((server) => `${endpointKey(server.address, server.port)} ${server.weight ?? "-"}`).sort();
  return digest([allowEmpty ? "allow-empty" : "", ...lines].join("\n"));
}

/** The version of a whole push: every backend an agent should run, with its version. */
export function setVersion(backends: ReadonlyMap<string, string>): string {
  return digest([...backends].map(([name, version]) => `${name}=${version}`).sort().join("\n"));
}

function digest(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, 16);
}
