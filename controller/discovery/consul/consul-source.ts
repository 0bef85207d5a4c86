import http from "node:http";
import { pino, type Logger } from "pino";
import { z } from "zod";
import { HafleetError, InvalidInputError } from "../../../agent/errors.js";
import { issuesOf } from "../../../agent/model/validate.js";
import { watchKey, type WatchScope, type DiscoverySource, type DroppedInstance, type ServiceSnapshot, type SnapshotListener } from "../service-snapshot.js";
import { ConsulClient, consulAgent, type HealthAnswer, type HealthQuery, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_STALE_MS, DEFAULT_TIMEOUT_MARGIN_MS, DEFAULT_WAIT_MS, MAX_WAIT_MS, type Consistency } from "./consul-client.js";
import { parseAddressChoice, type HealthPolicy, type WeightSource } from "./consul-response.js";
import type { TokenBucketOptions } from "../../core/token-bucket.js";
import { ConnectionBudget, DEFAULT_MAX_CONNECTIONS, describeBudget, planBudget } from "./connection-budget.js";
import { tokenFromFile } from "./consul-credentials.js";
import { DEFAULT_CONFIGURATION_RETRY_MS, ConsulWatch, type BackoffOptions, type DiscoveryObserver, type WatchClock, type WatchHealth } from "./consul-watch.js";

export interface ConsulSourceOptions {
  /** `http://host:port` or `https://host:port` of a Consul agent or server. */
  address: string;
  /** https: the CA that signed Consul's certificate; absent: the system's trust store. */
  caFile?: string;
  token?: string;
  /** A file whose first line is the token, re-read when it changes; not with `token`. */
  tokenFile?: string;
  /** https: a client certificate and key (clusters with `verify_incoming`), and the name Consul's certificate carries. */
  certFile?: string;
  keyFile?: string;
  tlsServerName?: string;
  datacenter?: string;
  /** Enterprise: the namespace and admin partition of every query. */
  namespace?: string;
  partition?: string;
  /** Default `default` (the leader answers). */
  consistency?: Consistency;
  /** With `stale`: the oldest answer taken, by `X-Consul-LastContact` (default 2 s). */
  maxStaleMs?: number;
  /** Concurrent connections to Consul at most (default 150, below Consul's 200 per client). */
  maxConnections?: number;
  /** Whether a leadership shares the budget's host: only said in the start log. */
  leadership?: boolean;
  /** After a configuration problem (403, unknown dc, over the body limit): next try this much later (default 60 s). */
  configurationRetryMs?: number;
  /** Default `passing`: Consul's `?passing`, node checks and maintenance included. */
  healthy?: HealthPolicy;
  /** Default `meta`: `Service.Meta["hafleet-weight"]`; `consul`: `Service.Weights`. */
  weights?: WeightSource;
  /** Blocking wait in ms; default 60 s (consul-template's, below most proxies' idle timeout), at most Consul's 10 minutes. */
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

/** One query of a watch: its mapping's dialect spelled as Consul's parameters. */
function healthQuery(service: string, tag: string | null, scope: WatchScope, index: number): HealthQuery {
  const { tags, address, ...where } = scope;
  return {
    service,
    tag,
    index,
    ...(tags === undefined ? {} : { tags }),
    ...(Object.keys(where).length === 0 ? {} : { scope: where }),
    ...(address === undefined ? {} : { address: parseAddressChoice(address) }),
  };
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
  tokenFile: z.string().min(1, "must not be empty").optional(),
  certFile: z.string().min(1, "must not be empty").optional(),
  keyFile: z.string().min(1, "must not be empty").optional(),
  tlsServerName: z.string().min(1, "must not be empty").optional(),
  datacenter: z.string().min(1, "must not be empty").optional(),
  namespace: z.string().min(1, "must not be empty").optional(),
  partition: z.string().min(1, "must not be empty").optional(),
  consistency: z.enum(["default", "stale", "consistent"]).optional(),
  maxStaleMs: z.number().int().min(0).optional(),
  maxConnections: z.number().int().min(1).optional(),
  configurationRetryMs: z.number().int().min(1).optional(),
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
  private readonly budget: ConnectionBudget;
  private readonly waitMs: number;
  /** Per key, the last problem logged: a configuration problem is said once, not at every retry. */
  private readonly saidProblem = new Map<string, string>();
  private readonly toldProblem = new Map<string, string>();
  private budgetSaid = false;
  private closed = false;

  constructor(private readonly options: ConsulSourceOptions) {
    const checked = optionsSchema.safeParse(options);
    if (!checked.success) throw new InvalidInputError("Consul source options", issuesOf(checked.error, options));
    if (options.token !== undefined && options.tokenFile !== undefined) {
      throw new InvalidInputError("Consul source options", [{ path: "tokenFile", message: "give token or tokenFile, not both", value: options.tokenFile }]);
    }
    this.logger = options.logger ?? pino({ enabled: false });
    this.budget = new ConnectionBudget(options.maxConnections ?? DEFAULT_MAX_CONNECTIONS);
    this.agent = consulAgent(
      options.address,
      {
        ...(options.caFile === undefined ? {} : { caFile: options.caFile }),
        ...(options.certFile === undefined ? {} : { certFile: options.certFile }),
        ...(options.keyFile === undefined ? {} : { keyFile: options.keyFile }),
        ...(options.tlsServerName === undefined ? {} : { tlsServerName: options.tlsServerName }),
      },
      this.budget.slots,
    );
    this.waitMs = options.wait ?? DEFAULT_WAIT_MS;
    const token = options.tokenFile === undefined ? options.token : tokenFromFile(options.tokenFile, (message) => this.logger.error({ tokenFile: options.tokenFile }, message));
    this.client = new ConsulClient({
      address: options.address,
      healthy: options.healthy ?? "passing",
      weights: options.weights ?? "meta",
      waitMs: this.waitMs,
      timeoutMarginMs: options.timeoutMarginMs ?? DEFAULT_TIMEOUT_MARGIN_MS,
      maxBodyBytes: options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
      consistency: options.consistency ?? "default",
      maxStaleMs: options.maxStaleMs ?? DEFAULT_MAX_STALE_MS,
      agent: this.agent,
      ...(token === undefined ? {} : { token }),
      ...(options.datacenter === undefined ? {} : { datacenter: options.datacenter }),
      ...(options.namespace === undefined ? {} : { namespace: options.namespace }),
      ...(options.partition === undefined ? {} : { partition: options.partition }),
    });
  }

  /**
   * Where every watch stands: answered, waiting for its first answer, or failing with the
   * error (a configuration problem apart). For the status: a backend whose watch never
   * answered is not published, and this says why.
   */
  health(): WatchHealth[] {
    return [...this.watches.values()].map((shared) => shared.watch.health);
  }

  refresh(service: string, tag: string | null, scope: WatchScope = {}): void {
    this.watches.get(watchKey(service, tag, scope))?.watch.refresh();
  }

  watch(service: string, tag: string | null, listener: SnapshotListener, scope: WatchScope = {}): () => void {
    if (this.closed) throw new ConsulSourceClosedError();
    const key = watchKey(service, tag, scope);
    const shared = this.watches.get(key) ?? this.startWatch(key, service, tag, scope);
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

  private startWatch(key: string, service: string, tag: string | null, scope: WatchScope): SharedWatch {
    const subscriptions = new Set<{ listener: SnapshotListener }>();
    // Built once: a scope Consul could never answer (a bad address choice) throws here, in watch().
    const query = healthQuery(service, tag, scope, 0);
    const watch = new ConsulWatch({
      key,
      fetch: (index, signal) => this.fetch({ ...query, index }, signal),
      onSnapshot: (snapshot) => this.onSnapshot(key, subscriptions, snapshot),
      onError: (error) => this.onError(key, subscriptions, error),
      onDropped: (dropped) => this.onDropped(key, dropped),
      onHealth: (health) => this.onHealth(health),
      onAnswer: () => {
        for (const { listener } of [...subscriptions]) if (listener.answered !== undefined) this.deliver(key, () => listener.answered!(key));
      },
      ...(this.options.configurationRetryMs === undefined ? {} : { configurationRetryMs: this.options.configurationRetryMs }),
      ...(this.options.rateLimit === undefined ? {} : { rateLimit: this.options.rateLimit }),
      ...(this.options.backoff === undefined ? {} : { backoff: this.options.backoff }),
      ...(this.options.clock === undefined ? {} : { clock: this.options.clock }),
      ...(this.options.random === undefined ? {} : { random: this.options.random }),
      ...(this.options.observer === undefined ? {} : { observer: this.options.observer }),
    });
    const shared: SharedWatch = { key, watch, subscriptions };
    this.watches.set(key, shared);
    watch.start();
    // Watches are started together at start: the budget is said once they all are.
    if (!this.budgetSaid) {
      this.budgetSaid = true;
      queueMicrotask(() => this.sayBudget());
    }
    return shared;
  }

  /** One query within the connection budget; past it, the wait is shortened so that every watch gets turns. */
  private async fetch(query: HealthQuery, signal: AbortSignal): Promise<HealthAnswer> {
    const release = await this.budget.acquire(signal);
    try {
      const plan = planBudget(this.watches.size, this.budget.slots, this.waitMs);
      return await this.client.healthService(query, signal, plan.waitMs);
    } finally {
      release();
    }
  }

  private sayBudget(): void {
    const plan = planBudget(this.watches.size, this.budget.slots, this.waitMs);
    const message = describeBudget(plan, this.options.leadership ?? false);
    if (plan.shared) this.logger.warn({ watches: plan.watches, maxConnections: plan.slots, waitMs: plan.waitMs }, message);
    else this.logger.info({ watches: plan.watches, maxConnections: plan.slots }, message);
  }

  private onHealth(health: WatchHealth): void {
    if (health.state !== "failing") {
      this.toldProblem.delete(health.key);
      if (this.saidProblem.delete(health.key)) this.logger.info({ service: health.key }, "Consul answers for the service again");
      return;
    }
    if (health.failure !== "configuration" || this.saidProblem.get(health.key) === health.error) return;
    this.saidProblem.set(health.key, health.error ?? "");
    const retryMs = this.options.configurationRetryMs ?? DEFAULT_CONFIGURATION_RETRY_MS;
    this.logger.error({ service: health.key, err: health.error, hint: health.hint, retryMs }, `configuration problem: ${health.hint ?? "Consul refuses the query"}; retried every ${Math.round(retryMs / 1000)} s, other services are not held back`);
  }

  private onSnapshot(key: string, subscriptions: Set<{ listener: SnapshotListener }>, snapshot: ServiceSnapshot): void {
    this.logger.info({ service: key, servers: snapshot.servers.length, dropped: snapshot.dropped.length }, "service changed in Consul");
    for (const { listener } of [...subscriptions]) this.deliver(key, () => listener.snapshot(snapshot));
  }

  private onError(key: string, subscriptions: Set<{ listener: SnapshotListener }>, error: Error): void {
    // A configuration problem is said once (onHealth logs it at error level), to the log and to
    // listeners alike, not at every slow retry; a different error is said again.
    if (this.watches.get(key)?.watch.health.failure === "configuration") {
      if (this.toldProblem.get(key) === error.message) return;
      this.toldProblem.set(key, error.message);
    } else {
      this.toldProblem.delete(key);
      this.logger.warn({ service: key, err: error }, "Consul query failed; retrying, the last snapshot stands");
    }
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
