import { watch as watchDirectory, type FSWatcher } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { basename, dirname } from "node:path";
import { pino, type Logger } from "pino";
import { z } from "zod";
import { InvalidInputError } from "../../agent/errors.js";
import { endpointKey } from "../../agent/model/values.js";
import { issuesOf, parseJsonWith } from "../../agent/model/validate.js";
import {
  toServers,
  watchKey,
  type DiscoverySource,
  type DroppedInstance,
  type RawInstance,
  type ServiceSnapshot,
  type SnapshotListener,
} from "./service-snapshot.js";

/*
 * The embedded discovery: a JSON catalog file, so that hafleet runs end to end without
 * Consul. The file is the whole truth: a service missing from it has no instances.
 *
 *   { "services": { "web": [ { "address": "10.0.0.5", "port": 8080, "weight": 100, "tags": ["a"] } ] } }
 */

// Only the outer shape can fail the whole file; each instance is judged on its own, so one bad
// instance is dropped (with its reason) and never takes its neighbours down with it.
const catalogSchema = z.strictObject({
  services: z.record(z.string(), z.array(z.unknown())),
});

const instanceSchema = z.strictObject({
  address: z.unknown(),
  port: z.unknown(),
  weight: z.unknown().optional(),
  tags: z.array(z.string()).optional(),
});

export interface CatalogInstance {
  raw: RawInstance;
  tags: readonly string[];
}

/** One catalog entry, either usable (tags known) or dropped whatever the watch. */
export type CatalogEntry = { ok: true; instance: CatalogInstance } | { ok: false; dropped: DroppedInstance };

export type Catalog = ReadonlyMap<string, readonly CatalogEntry[]>;

/** Parses the catalog file's text; throws InvalidInputError for text that is not a catalog. */
export function parseCatalog(text: string, source: string): Catalog {
  const data = parseJsonWith(catalogSchema, text, source);
  const catalog = new Map<string, CatalogEntry[]>();
  for (const [service, instances] of Object.entries(data.services)) {
    catalog.set(service, instances.map((instance, index) => catalogEntry(instance, `${service}[${index}]`)));
  }
  return catalog;
}

function catalogEntry(input: unknown, id: string): CatalogEntry {
  const result = instanceSchema.safeParse(input);
  if (!result.success) {
    const reason = issuesOf(result.error, input)
      .map((issue) => (issue.path === "" ? issue.message : `${issue.path}: ${issue.message}`))
      .join("; ");
    return { ok: false, dropped: { id, reason } };
  }
  const { address, port, weight, tags } = result.data;
  const raw: RawInstance = weight === undefined ? { id, address, port } : { id, address, port, weight };
  return { ok: true, instance: { raw, tags: tags ?? [] } };
}

/** What a watch of `service` (and `tag`) sees in `catalog`. */
export function snapshotOf(catalog: Catalog, service: string, tag: string | null): ServiceSnapshot {
  const entries = catalog.get(service) ?? [];
  const wanted: RawInstance[] = [];
  const dropped: DroppedInstance[] = [];
  for (const entry of entries) {
    if (!entry.ok) dropped.push(entry.dropped);
    else if (tag === null || entry.instance.tags.includes(tag)) wanted.push(entry.instance.raw);
  }
  const result = toServers(wanted);
  return { key: watchKey(service, tag), servers: result.servers, dropped: [...dropped, ...result.dropped] };
}

/** Same servers with the same weights, in any order. */
export function sameServers(a: ServiceSnapshot, b: ServiceSnapshot): boolean {
  if (a.servers.length !== b.servers.length) return false;
  const identity = (snapshot: ServiceSnapshot) =>
    snapshot.servers.map((server) => `${endpointKey(server.address, server.port)}/${server.weight ?? ""}`).sort();
  const left = identity(a);
  const right = identity(b);
  return left.every((value, index) => value === right[index]);
}

function sameDropped(a: readonly DroppedInstance[], b: readonly DroppedInstance[]): boolean {
  return a.length === b.length && a.every((entry, index) => entry.id === b[index]?.id && entry.reason === b[index]?.reason);
}

interface Watch {
  service: string;
  tag: string | null;
  listeners: Set<SnapshotListener>;
  /** The last snapshot listeners were told of; null until the catalog was first read. */
  last: ServiceSnapshot | null;
}

export interface FileSourceOptions {
  /** How often the file's identity (inode, size, mtime) is checked, in case fs.watch missed a change. */
  pollMs?: number;
  logger?: Logger;
}

const DEBOUNCE_MS = 50;

export class FileSource implements DiscoverySource {
  private readonly pollMs: number;
  private readonly logger: Logger;
  private readonly watches = new Map<string, Watch>();
  private catalog: Catalog | null = null;
  /** Why the file cannot be used right now; null once it has been read well. */
  private failure: Error | null = null;
  private started = false;
  private closed = false;
  private watcher: FSWatcher | null = null;
  private poller: NodeJS.Timeout | null = null;
  private debounce: NodeJS.Timeout | null = null;
  /** The file's identity when last read, so the poll reloads only when it changed. */
  private readIdentity: string | null = null;
  private reloading: Promise<void> | null = null;
  private reloadAgain = false;

  constructor(
    private readonly path: string,
    options: FileSourceOptions = {},
  ) {
    this.pollMs = options.pollMs ?? 1000;
    this.logger = (options.logger ?? pino({ level: "silent" })).child({ source: "file", file: path });
  }

  watch(service: string, tag: string | null, listener: SnapshotListener): () => void {
    if (this.closed) throw new Error("FileSource is closed");
    const key = watchKey(service, tag);
    let entry = this.watches.get(key);
    if (entry === undefined) {
      entry = { service, tag, listeners: new Set(), last: this.catalog === null ? null : snapshotOf(this.catalog, service, tag) };
      this.watches.set(key, entry);
      if (entry.last !== null) this.logDropped(entry, entry.last, []);
    }
    const watch = entry;
    watch.listeners.add(listener);
    this.start();
    this.greet(watch, listener);
    return () => {
      watch.listeners.delete(listener);
      // Only this watch's own entry: the key may have been dropped and watched anew since.
      if (watch.listeners.size === 0 && this.watches.get(key) === watch) this.watches.delete(key);
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watcher?.close();
    this.watcher = null;
    if (this.poller !== null) clearInterval(this.poller);
    if (this.debounce !== null) clearTimeout(this.debounce);
    this.poller = null;
    this.debounce = null;
    this.watches.clear();
    await this.reloading;
  }

  /** A new listener hears what is known now, without waiting for the file to change. */
  refresh(): void {
    this.schedule();
  }

  private greet(watch: Watch, listener: SnapshotListener): void {
    const snapshot = watch.last;
    const failure = this.failure;
    if (snapshot === null && failure === null) return; // the first read, under way, tells everyone
    queueMicrotask(() => {
      if (this.closed || !watch.listeners.has(listener)) return;
      if (snapshot !== null) this.tell(() => listener.snapshot(snapshot));
      if (failure !== null) this.tell(() => listener.error(watchKey(watch.service, watch.tag), failure));
    });
  }

  private start(): void {
    if (this.started) return;
    this.started = true;
    // Editors and config tools replace a file by renaming a new one over it, which a watch on
    // the file itself stops seeing; the directory sees both kinds of change.
    const name = basename(this.path);
    try {
      this.watcher = watchDirectory(dirname(this.path), (_event, changed) => {
        if (changed === null || changed === name) this.schedule();
      });
      this.watcher.on("error", (error) => {
        this.logger.warn({ err: error }, "watching the catalog directory failed; polling only");
        this.watcher?.close();
        this.watcher = null;
      });
    } catch (error) {
      this.logger.warn({ err: error }, "cannot watch the catalog directory; polling only");
    }
    this.poller = setInterval(() => void this.poll(), this.pollMs);
    void this.reload();
  }

  private async poll(): Promise<void> {
    if ((await this.identity()) !== this.readIdentity) this.schedule();
  }

  private async identity(): Promise<string> {
    try {
      const info = await stat(this.path);
      return `${info.ino}:${info.size}:${info.mtimeMs}`;
    } catch (error) {
      return `missing:${(error as NodeJS.ErrnoException).code ?? "error"}`;
    }
  }

  /** Waits for a burst of events (write, then rename, then chmod) to end before reading. */
  private schedule(): void {
    if (this.closed) return;
    if (this.debounce !== null) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = null;
      void this.reload();
    }, DEBOUNCE_MS);
  }

  /** One read at a time; a change seen during a read gets one more read after it. */
  private reload(): Promise<void> {
    if (this.reloading !== null) {
      this.reloadAgain = true;
      return this.reloading;
    }
    this.reloading = this.readOnce().finally(() => {
      this.reloading = null;
      if (this.reloadAgain && !this.closed) {
        this.reloadAgain = false;
        void this.reload();
      }
    });
    return this.reloading;
  }

  private async readOnce(): Promise<void> {
    // Identity first: a change between this stat and the read shows on the next poll.
    const identity = await this.identity();
    let catalog: Catalog;
    try {
      const text = await readFile(this.path, "utf8");
      catalog = parseCatalog(text, this.path);
    } catch (error) {
      this.readIdentity = identity;
      if (!this.closed) this.fail(error instanceof InvalidInputError ? error : new Error(`cannot read the catalog file: ${(error as Error).message}`, { cause: error }));
      return;
    }
    this.readIdentity = identity;
    if (this.closed) return;
    this.catalog = catalog;
    if (this.failure !== null) this.logger.info("catalog file readable again");
    this.failure = null;
    for (const watch of this.watches.values()) this.publish(watch, catalog);
    for (const [key, watch] of this.watches) {
      for (const listener of [...watch.listeners]) if (listener.answered !== undefined) this.tell(() => listener.answered!(key));
    }
  }

  private publish(watch: Watch, catalog: Catalog): void {
    const snapshot = snapshotOf(catalog, watch.service, watch.tag);
    const previous = watch.last;
    this.logDropped(watch, snapshot, previous?.dropped ?? []);
    if (previous !== null && sameServers(previous, snapshot)) {
      watch.last = { ...previous, dropped: snapshot.dropped };
      return;
    }
    watch.last = snapshot;
    this.logger.info({ service: watch.service, tag: watch.tag, servers: snapshot.servers.length }, "service changed");
    for (const listener of [...watch.listeners]) this.tell(() => listener.snapshot(snapshot));
  }

  /** The last good snapshots stand; every watch hears of the failure once per distinct failure. */
  private fail(error: Error): void {
    const repeated = this.failure !== null && this.failure.message === error.message;
    this.failure = error;
    if (repeated) return;
    this.logger.warn({ err: error }, "catalog file unusable; keeping the last good snapshots");
    for (const [key, watch] of this.watches) {
      for (const listener of [...watch.listeners]) this.tell(() => listener.error(key, error));
    }
  }

  /** A listener that throws must not stop the others hearing, nor end the process. */
  private tell(notify: () => void): void {
    try {
      notify();
    } catch (error) {
      this.logger.error({ err: error }, "a discovery listener threw");
    }
  }

  private logDropped(watch: Watch, snapshot: ServiceSnapshot, before: readonly DroppedInstance[]): void {
    if (snapshot.dropped.length === 0 || sameDropped(snapshot.dropped, before)) return;
    for (const dropped of snapshot.dropped) {
      this.logger.warn({ service: watch.service, instance: dropped.id, reason: dropped.reason }, "instance dropped");
    }
  }
}
