import { toServers, watchKey, type DiscoverySource, type ServiceSnapshot, type SnapshotListener } from "../../controller/discovery/service-snapshot.js";

/** An instance as the benchmark hands it over: unvalidated, like any discovery answer. */
export interface MemoryInstance {
  address: string;
  port: number;
  weight?: number;
  tags?: readonly string[];
}

interface Watch {
  service: string;
  tag: string | null;
  listeners: Set<SnapshotListener>;
}

/**
 * Discovery held in memory, changed by `set()`: the benchmark decides exactly when the
 * desired state changes, so convergence is timed from that call and from nothing slower.
 * Instances go through `toServers`, the validation every real source applies.
 */
export class MemorySource implements DiscoverySource {
  private readonly services = new Map<string, readonly MemoryInstance[]>();
  private readonly watches = new Map<string, Watch>();
  private closed = false;

  /** Replaces the service's instances; every watch of it hears the new snapshot at once. */
  set(service: string, instances: readonly MemoryInstance[]): void {
    this.services.set(service, [...instances]);
    for (const watch of this.watches.values()) {
      if (watch.service === service) this.tellAll(watch);
    }
  }

  watch(service: string, tag: string | null, listener: SnapshotListener): () => void {
    if (this.closed) throw new Error("MemorySource is closed");
    const key = watchKey(service, tag);
    let watch = this.watches.get(key);
    if (watch === undefined) {
      watch = { service, tag, listeners: new Set() };
      this.watches.set(key, watch);
    }
    const entry = watch;
    entry.listeners.add(listener);
    // As a real source does: a new listener hears the current answer, but not from inside watch().
    if (this.services.has(service)) {
      queueMicrotask(() => {
        if (!this.closed && entry.listeners.has(listener)) listener.snapshot(this.snapshotOf(entry));
      });
    }
    return () => {
      entry.listeners.delete(listener);
      if (entry.listeners.size === 0 && this.watches.get(key) === entry) this.watches.delete(key);
    };
  }

  refresh(service: string, tag: string | null): void {
    const watch = this.watches.get(watchKey(service, tag));
    if (watch !== undefined && this.services.has(service)) this.tellAll(watch);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watches.clear();
  }

  private tellAll(watch: Watch): void {
    const snapshot = this.snapshotOf(watch);
    for (const listener of watch.listeners) listener.snapshot(snapshot);
  }

  private snapshotOf(watch: Watch): ServiceSnapshot {
    const instances = (this.services.get(watch.service) ?? []).filter((instance) => watch.tag === null || (instance.tags ?? []).includes(watch.tag));
    const raw = instances.map((instance, index) => {
      const id = `${watch.service}[${index}]`;
      return instance.weight === undefined ? { id, address: instance.address, port: instance.port } : { id, address: instance.address, port: instance.port, weight: instance.weight };
    });
    const { servers, dropped } = toServers(raw);
    return { key: watchKey(watch.service, watch.tag), servers, dropped };
  }
}
