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
  /**
   * The source read the service well, changed or not (a snapshot is told only on a change):
   * discovery's health is ok again after errors. Optional: not every source tells it.
   */
  answered?(key: string): void;
}

/** A discovery source: Consul, or the file source. */
export interface DiscoverySource {
  /**
   * Starts the shared watch of `service` (with `tag`, if any, and where `scope` says: Consul's
   * datacenter, namespace, partition, peer, filter, more tags, the address to use); returns a
   * function that stops it. A source without such notions ignores `scope`.
   */
  watch(service: string, tag: string | null, listener: SnapshotListener, scope?: WatchScope): () => void;
  /**
   * Reads the service again now rather than waiting for a change. A held answer (empty,
   * truncated) may have come with a valid index: a blocking watch would then wait for the
   * next change, which may never come (an ACL token fixed on the server moves no index).
   */
  refresh(service: string, tag: string | null, scope?: WatchScope): void;
  /**
   * Per watch: answered, still waiting for its first answer, or failing (with the error, since
   * when, and whether it is a configuration problem). Sources without such a notion leave it out.
   */
  health?(): Array<{ key: string; state: "pending" | "ok" | "failing"; error: string | null; failure: string | null; hint: string | null; since: number; answeredAt: number | null }>;
  close(): Promise<void>;
}

/**
 * Where a Consul service is looked up, and which address of its instances is used: a
 * mapping's Consul dialect. Every field is optional; an empty scope is the plain service.
 */
export interface WatchScope {
  dc?: string;
  ns?: string;
  partition?: string;
  peer?: string;
  samenessGroup?: string;
  /** Consul's filter expression (go-bexpr), passed through. */
  filter?: string;
  /** Tags beyond `tag`: an instance must carry all of them. */
  tags?: readonly string[];
  /**
   * `service` (default: Service.Address, else Node.Address), `node` (Node.Address), or a tagged
   * address: `service:lan_ipv4` (Service.TaggedAddresses, with its port), `node:wan` (Node.TaggedAddresses).
   */
  address?: string;
}

const SCOPE_FIELDS = ["dc", "ns", "partition", "peer", "samenessGroup", "filter", "tags", "address"] as const;

/** `service`, `service#tag`, and the scope's fields after `?` when any: one watch per distinct lookup. */
export function watchKey(service: string, tag: string | null, scope: WatchScope = {}): string {
  const base = tag === null ? service : `${service}#${tag}`;
  const parts: string[] = [];
  for (const field of SCOPE_FIELDS) {
    const value = scope[field];
    if (value === undefined || (Array.isArray(value) && value.length === 0)) continue;
    parts.push(`${field}=${encodeURIComponent(Array.isArray(value) ? [...value].sort().join(",") : String(value))}`);
  }
  return parts.length === 0 ? base : `${base}?${parts.join("&")}`;
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
