import { desiredServerSchema, type DesiredServer } from "../../agent/model/desired-state.js";
import { endpointKey } from "../../agent/model/values.js";

/** An instance as a discovery source reports it, before any validation. */
export interface RawInstance {
  /** The source's id for the instance (Consul's Service.ID), for logs. */
  id: string;
  address: unknown;
  port: unknown;
  weight?: unknown;
}

export interface DroppedInstance {
  id: string;
  reason: string;
}

/** What one watched service (and tag) resolves to at one moment, validated. */
export interface ServiceSnapshot {
  /** `service` or `service#tag`: one watch per key, shared by every agent. */
  key: string;
  servers: DesiredServer[];
  /** Instances that failed validation: never sent to an agent, logged with the reason. */
  dropped: DroppedInstance[];
}

export interface SnapshotListener {
  snapshot(snapshot: ServiceSnapshot): void;
  /** The source failed; it keeps retrying on its own, and the last good snapshot stands. */
  error(key: string, error: Error): void;
}

/** A discovery source: Consul, or the file source. */
export interface DiscoverySource {
  /** Starts the shared watch of `service` (with `tag`, if any); returns a function that stops it. */
  watch(service: string, tag: string | null, listener: SnapshotListener): () => void;
  /**
   * Reads the service again now rather than waiting for a change. A held answer (empty,
   * truncated) may have come with a valid index: a blocking watch would then wait for the
   * next change, which may never come (an ACL token fixed on the server moves no index).
   */
  refresh(service: string, tag: string | null): void;
  close(): Promise<void>;
}

export function watchKey(service: string, tag: string | null): string {
  return tag === null ? service : `${service}#${tag}`;
}

/**
 * Validates instances with the agent's own schema, so nothing reaches an agent that the agent
 * would refuse; bad and duplicate instances are dropped with the reason.
 */
export function toServers(instances: readonly RawInstance[]): { servers: DesiredServer[]; dropped: DroppedInstance[] } {
  const servers: DesiredServer[] = [];
  const dropped: DroppedInstance[] = [];
  const seen = new Set<string>();
  for (const instance of instances) {
    const candidate = instance.weight === undefined ? { address: instance.address, port: instance.port } : { address: instance.address, port: instance.port, weight: instance.weight };
    const parsed = desiredServerSchema.safeParse(candidate);
    if (!parsed.success) {
      const reasons = parsed.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message} (got ${JSON.stringify((candidate as Record<string, unknown>)[String(issue.path[0])])})`);
      dropped.push({ id: instance.id, reason: reasons.join("; ") });
      continue;
    }
    const key = endpointKey(parsed.data.address, parsed.data.port);
    if (seen.has(key)) {
      dropped.push({ id: instance.id, reason: `duplicate of another instance at ${key}` });
      continue;
    }
    seen.add(key);
    servers.push(parsed.data);
  }
  return { servers, dropped };
}
