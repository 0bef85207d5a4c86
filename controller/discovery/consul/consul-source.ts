import http from "node:http";
import { pino, type Logger } from "pino";
import { z } from "zod";
import { HafleetError, InvalidInputError } from "../../../agent/errors.js";
import { issuesOf } from "../../../agent/model/validate.js";
import { watchKey, type DiscoverySource, type DroppedInstance, type ServiceSnapshot, type SnapshotListener } from "../service-snapshot.js";
import { ConsulClient, consulAgent, DEFAULT_MAX_BODY_BYTES, DEFAULT_TIMEOUT_MARGIN_MS, DEFAULT_WAIT_MS, MAX_WAIT_MS } from "./consul-client.js";
import type { HealthPolicy, WeightSource } from "./consul-response.js";
import type { TokenBucketOptions } from "../../core/token-bucket.js";
import { ConsulWatch, type BackoffOptions, type DiscoveryObserver, type WatchClock } from "./consul-watch.js";

export interface ConsulSourceOptions {
  /** `http://host:port` or `https://host:port` of a Consul agent or server. */
  address: string;
  /** https: the CA that signed Consul's certificate; absent: the system's trust store. */
  caFile?: string;
  token?: string;
  datacenter?: string;
  /** Default `passing`: Consul's `?passing`, node checks and maintenance included. */
  healthy?: HealthPolicy;
  /** Default `meta`: `Service.Meta["hafleet-weight"]`; `consul`: `Service.Weights`. */
  weights?: WeightSource;
  /** Blocking wait in ms; default 5 minutes, at most Consul's 10. */
  wait?: number;
  rateLimit?: Partial<TokenBucketOptions>;
  backoff?: Partial<BackoffOptions>;
  logger?: Logger;
  timeoutMarginMs?: number;
  maxBodyBytes?: number;
  clock?: WatchClock;
  random?: () => number;
  /** Told of every query of every watch (the controller's metrics). */
  observer?: DiscoveryObserver;
}

export class ConsulSourceClosedError extends HafleetError {
  readonly code = "HAFLEET_CONSUL_CLOSED";
  constructor() {
    super("the Consul source is closed");
    this.name = "ConsulSourceClosedError";
  }
}

const positive = z.number().finite().positive();
const optionsSchema = z.looseObject({
  address: z.url({ protocol: /^https?$/, error: "must be an http:// or https:// URL" }),
  caFile: z.string().min(1, "must not be empty").optional(),
  token: z.string().min(1, "must not be empty").optional(),
  datacenter: z.string().min(1, "must not be empty").optional(),
  healthy: z.enum(["passing", "passing-or-warning"]).optional(),
  weights: z.enum(["meta", "consul"]).optional(),
  wait: z.number().int().min(1, "must be at least 1 ms").max(MAX_WAIT_MS, "must be at most 10 minutes (Consul's limit)").optional(),
  rateLimit: z.strictObject({ burst: z.number().int().min(1).optional(), refillPerSecond: positive.optional() }).optional(),
  backoff: z.strictObject({ initialMs: positive.optional(), maxMs: positive.optional() }).optional(),
  timeoutMarginMs: z.number().int().min(0).optional(),
  maxBodyBytes: z.number().int().min(1).optional(),
});

/** One shared watch per key, whoever asks for it: Consul's load grows with watchers. */
interface SharedWatch {
  key: string;
  watch: ConsulWatch;
  /** One entry per `watch()` call, so the same listener twice needs two stops. */
  subscriptions: Set<{ listener: SnapshotListener }>;
}

export class ConsulSource implements DiscoverySource {
  private readonly client: ConsulClient;
  private readonly agent: http.Agent;
  private readonly logger: Logger;
  private readonly watches = new Map<string, SharedWatch>();
  private readonly stopping = new Set<Promise<void>>();
  private closed = false;

  constructor(private readonly options: ConsulSourceOptions) {
    const checked = optionsSchema.safeParse(options);
    if (!checked.success) throw new InvalidInputError("Consul source options", issuesOf(checked.error, options));
    this.logger = options.logger ?? pino({ enabled: false });
    this.agent = consulAgent(options.address, options.caFile);
    const clientOptions = {
      address: options.address,
      healthy: options.healthy ?? "passing",
      weights: options.weights ?? "meta",
      waitMs: options.wait ?? DEFAULT_WAIT_MS,
      timeoutMarginMs: options.timeoutMarginMs ?? DEFAULT_TIMEOUT_MARGIN_MS,
      maxBodyBytes: options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
      agent: this.agent,
    };
    this.client = new ConsulClient({
      ...clientOptions,
      ...(options.token === undefined ? {} : { token: options.token }),
      ...(options.datacenter === undefined ? {} : { datacenter: options.datacenter }),
    });
  }

  refresh(service: string, tag: string | null): void {
    this.watches.get(watchKey(service, tag))?.watch.refresh();
  }

  watch(service: string, tag: string | null, listener: SnapshotListener): () => void {
    if (this.closed) throw new ConsulSourceClosedError();
    const key = watchKey(service, tag);
    const shared = this.watches.get(key) ?? this.startWatch(key, service, tag);
    const subscription = { listener };
    shared.subscriptions.add(subscription);
    const known = shared.watch.snapshot;
    if (known !== null) {
      // Never from inside watch(): the caller does not hold its stop function yet.
      queueMicrotask(() => {
        if (shared.subscriptions.has(subscription)) this.deliver(key, () => listener.snapshot(known));
      });
    }
    let stopped = false;
    return () => {
      if (stopped) return;
      stopped = true;
      shared.subscriptions.delete(subscription);
      if (shared.subscriptions.size > 0 || this.watches.get(key) !== shared) return;
      this.watches.delete(key);
      this.track(shared.watch.stop());
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const shared of this.watches.values()) this.track(shared.watch.stop());
    this.watches.clear();
    await Promise.all([...this.stopping]);
    this.agent.destroy();
  }

  private startWatch(key: string, service: string, tag: string | null): SharedWatch {
    const subscriptions = new Set<{ listener: SnapshotListener }>();
    const watch = new ConsulWatch({
      key,
      fetch: (index, signal) => this.client.healthService({ service, tag, index }, signal),
      onSnapshot: (snapshot) => this.onSnapshot(key, subscriptions, snapshot),
      onError: (error) => this.onError(key, subscriptions, error),
      onDropped: (dropped) => this.onDropped(key, dropped),
      ...(this.options.rateLimit === undefined ? {} : { rateLimit: this.options.rateLimit }),
      ...(this.options.backoff === undefined ? {} : { backoff: this.options.backoff }),
      ...(this.options.clock === undefined ? {} : { clock: this.options.clock }),
      ...(this.options.random === undefined ? {} : { random: this.options.random }),
      ...(this.options.observer === undefined ? {} : { observer: this.options.observer }),
    });
    const shared: SharedWatch = { key, watch, subscriptions };
    this.watches.set(key, shared);
    watch.start();
    return shared;
  }

  private onSnapshot(key: string, subscriptions: Set<{ listener: SnapshotListener }>, snapshot: ServiceSnapshot): void {
    this.logger.info({ service: key, servers: snapshot.servers.length, dropped: snapshot.dropped.length }, "service changed in Consul");
    for (const { listener } of [...subscriptions]) this.deliver(key, () => listener.snapshot(snapshot));
  }

  private onError(key: string, subscriptions: Set<{ listener: SnapshotListener }>, error: Error): void {
    this.logger.warn({ service: key, err: error }, "Consul query failed; retrying, the last snapshot stands");
    for (const { listener } of [...subscriptions]) this.deliver(key, () => listener.error(key, error));
  }

  private onDropped(key: string, dropped: readonly DroppedInstance[]): void {
    for (const instance of dropped) {
      this.logger.warn({ service: key, instance: instance.id, reason: instance.reason }, "instance dropped");
    }
  }

  /** One listener's exception must not keep the others from hearing, nor stop the watch. */
  private deliver(key: string, call: () => void): void {
    try {
      call();
    } catch (error) {
      this.logger.error({ service: key, err: error }, "a discovery listener threw");
    }
  }

  private track(stop: Promise<void>): void {
    this.stopping.add(stop);
    void stop.finally(() => this.stopping.delete(stop));
  }
}
