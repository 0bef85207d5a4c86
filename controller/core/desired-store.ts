import type { DesiredServer } from "../../agent/model/desired-state.js";
import type { Name } from "../../agent/model/values.js";
import type { WireBackend } from "../../proto/messages.js";
import type { BackendMapping } from "../config/controller-config.js";
import type { DroppedInstance, ServiceSnapshot } from "../discovery/service-snapshot.js";
import { watchKey, type WatchScope } from "../discovery/service-snapshot.js";
import { guardStep } from "./guard.js";
import { backendVersion } from "./versions.js";

export interface DesiredBackendState {
  name: Name;
  servers: DesiredServer[];
  version: string;
  allowEmpty: boolean;
  /** Why the last discovery answer was not taken (the last good set stands), or null. */
  held: string | null;
  dropped: DroppedInstance[];
}

/** A backend's desired state as the wire and the state files carry it. */
export function toWire(state: DesiredBackendState): WireBackend {
  return { name: state.name, version: state.version, servers: state.servers, allowEmpty: state.allowEmpty };
}

/**
 * The desired server set of every mapped backend, from discovery snapshots, guarded. Knows
 * nothing of agents' connections or gRPC: the server asks it which backends an agent gets.
 * A backend is published only once discovery has answered for it: before that, agents are
 * sent nothing for it rather than an empty set, and keep what they run. Nor is one whose every
 * answer was held. The fleet waits for every backend's first answer at most `readyWaitMs`:
 * after that, what answered is pushed, and the others join as they answer.
 */
export class DesiredStore {
  private readonly backends = new Map<Name, DesiredBackendState>();
  private readonly byKey = new Map<string, BackendMapping[]>();
  /**
   * backendsFor() per label set, until the next change: a change is fanned out to every
   * agent, and agents with the same labels share one array (and so one set version).
   */
  private readonly forLabels = new Map<string, DesiredBackendState[]>();
  /** Backends discovery has answered for, held or not. */
  private readonly answered = new Set<string>();
  private readonly startedAt: number;

  constructor(
    private readonly mappings: readonly BackendMapping[],
    private readonly guard: { maxDropShare: number; maxServers: number },
    private readonly readiness: { readyWaitMs: number; clock: () => number } = { readyWaitMs: Infinity, clock: Date.now },
  ) {
    this.startedAt = readiness.clock();
    for (const mapping of mappings) {
      const key = mappingWatchKey(mapping);
      this.byKey.set(key, [...(this.byKey.get(key) ?? []), mapping]);
    }
  }

  /** The distinct (service, tag) pairs to watch: one watch each, whatever the fleet's size. */
  watches(): Array<{ service: string; tag: string | null; scope: WatchScope }> {
    return [...this.byKey.values()].map(([mapping]) => ({ service: mapping!.service, tag: mapping!.tag ?? null, scope: mappingScope(mapping!) }));
  }

  /** Takes a snapshot; returns the backends whose desired set changed, and those now held. */
  apply(snapshot: ServiceSnapshot): { changed: string[]; held: Array<{ backend: string; reason: string }> } {
    this.forLabels.clear();
    const changed: string[] = [];
    const held: Array<{ backend: string; reason: string }> = [];
    for (const mapping of this.byKey.get(snapshot.key) ?? []) {
      const allowEmpty = mapping.allowEmpty ?? false;
      const current = this.backends.get(mapping.backend);
      this.answered.add(mapping.backend);
      const verdict = guardStep(current?.servers, snapshot.servers, { ...this.guard, allowEmpty });
      if (!verdict.accept) {
        if (current !== undefined) this.backends.set(mapping.backend, { ...current, held: verdict.reason, dropped: snapshot.dropped });
        held.push({ backend: mapping.backend, reason: verdict.reason });
        continue;
      }
      const version = backendVersion(snapshot.servers, allowEmpty);
      this.backends.set(mapping.backend, { name: mapping.backend, servers: snapshot.servers, version, allowEmpty, held: null, dropped: snapshot.dropped });
      if (current?.version !== version) changed.push(mapping.backend);
    }
    return { changed, held };
  }

  /** The backends an agent with these labels should run, each with its version. */
  backendsFor(labels: Readonly<Record<string, string>>): readonly DesiredBackendState[] {
    const key = JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    let result = this.forLabels.get(key);
    if (!result) {
      result = [];
      for (const mapping of this.mappings) {
        const state = this.backends.get(mapping.backend);
        if (state && matches(mapping.agents, labels)) result.push(state);
      }
      this.forLabels.set(key, result);
    }
    return result;
  }

  /**
   * Pushes may start: discovery has answered for every mapped backend, or the wait for the
   * slowest ran out (then the backends still pending stay unpublished; see pendingFor).
   */
  ready(): boolean {
    const allAnswered = this.mappings.every((mapping) => this.answered.has(mapping.backend));
    return allAnswered || this.readiness.clock() - this.startedAt >= this.readiness.readyWaitMs;
  }

  /** When ready() turns true by itself (the wait's end), in ms from now; null when it is already or never will. */
  readyInMs(): number | null {
    if (this.ready() || !Number.isFinite(this.readiness.readyWaitMs)) return null;
    return this.startedAt + this.readiness.readyWaitMs - this.readiness.clock();
  }

  /** Mapped backends not published (no answer yet, or every answer held): agents keep what they run of them. */
  pending(): Name[] {
    return this.mappings.filter((mapping) => !this.backends.has(mapping.backend)).map((mapping) => mapping.backend);
  }

  /** Of the backends an agent with these labels is mapped, those not published yet: never removed from it. */
  pendingFor(labels: Readonly<Record<string, string>>): ReadonlySet<string> {
    return new Set(this.mappings.filter((mapping) => !this.backends.has(mapping.backend) && matches(mapping.agents, labels)).map((mapping) => mapping.backend));
  }

  all(): DesiredBackendState[] {
    return [...this.backends.values()];
  }
}

/** A mapping's Consul dialect: where its service is looked up, which address is used. */
export function mappingScope(mapping: BackendMapping): WatchScope {
  const scope: WatchScope = {};
  for (const field of ["dc", "ns", "partition", "peer", "samenessGroup", "filter", "address"] as const) {
    const value = mapping[field];
    if (value !== undefined) scope[field] = value;
  }
  if (mapping.tags !== undefined && mapping.tags.length > 0) scope.tags = mapping.tags;
  return scope;
}

/** The key of the watch a mapping reads: mappings with the same service, tag and scope share one. */
export function mappingWatchKey(mapping: BackendMapping): string {
  return watchKey(mapping.service, mapping.tag ?? null, mappingScope(mapping));
}

function matches(selector: Readonly<Record<string, string>> | undefined, labels: Readonly<Record<string, string>>): boolean {
  if (!selector) return true;
  return Object.entries(selector).every(([key, value]) => labels[key] === value);
}
