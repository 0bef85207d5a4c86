import type { ConsulDiscovery, ControllerConfig } from "../config/controller-config.js";
import type { ConsulLeadershipOptions } from "./consul-leadership.js";

/**
 * The leadership's way to Consul, from the discovery's consul block and the leadership block:
 * the same address, credentials (token or token file, CA, client certificate, server name),
 * datacenter, namespace, partition and blocking wait as discovery, and the session's node checks.
 * For `rolloutLeadership()`: `new ConsulLeadership({ ...leadershipConnection(consul, settings), key, ... })`.
 */
export type LeadershipConnection = Pick<
  ConsulLeadershipOptions<unknown>,
  "address" | "token" | "tokenFile" | "caFile" | "certFile" | "keyFile" | "tlsServerName" | "datacenter" | "namespace" | "partition" | "nodeChecks" | "waitMs"
>;

export function leadershipConnection(consul: ConsulDiscovery, settings?: Pick<NonNullable<ControllerConfig["leadership"]>, "nodeChecks">): LeadershipConnection {
  const connection: LeadershipConnection = { address: consul.address, waitMs: consul.wait };
  for (const field of ["token", "tokenFile", "caFile", "certFile", "keyFile", "tlsServerName", "datacenter", "namespace", "partition"] as const) {
    const value = consul[field];
    if (value !== undefined) connection[field] = value;
  }
  if (settings?.nodeChecks !== undefined) connection.nodeChecks = settings.nodeChecks;
  return connection;
}
