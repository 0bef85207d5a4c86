import http from "node:http";
import type { Logger } from "pino";
import { z } from "zod";
import { InvalidInputError } from "../../agent/errors.js";
import { issuesOf } from "../../agent/model/validate.js";
import { ConsulClient, consulAgent, DEFAULT_WAIT_MS, MAX_WAIT_MS } from "../discovery/consul/consul-client.js";
import { systemClock, type WatchClock } from "../discovery/consul/consul-watch.js";
import { followBlocking } from "./blocking-follow.js";
import { ConsulLockApi, type KeyAnswer } from "./consul-lock-api.js";
import { classifyFailure } from "../discovery/consul/consul-failure.js";
import { tokenFromFile } from "../discovery/consul/consul-credentials.js";
import { checkPublished, encodeLeaderValue, readLeaderValue, replicaSchema, type Replica } from "./leader-value.js";
import { LeadershipLostError, NotLeaderError } from "./leadership-errors.js";
import {
  acquireDeferred,
  acquired,
  acquireRefused,
  initialState,
  isLeading,
  keyRead,
  leaseEnd,
  renewDueAt,
  renewRetryMs,
  requestTimeoutMs,
  retryDelayMs,
  sameView,
  sessionConfirmed,
  sessionLost,
  shouldAcquire,
  viewOf,
  type LeadershipState,
  type LeadershipView,
  type Timing,
} from "./leadership-state.js";

/*
 * One leads, the others follow: the lock on a Consul KV key, held by a TTL session
 * (https://developer.hashicorp.com/consul/docs/automate/application-leader-election).
 * The shell runs three things against the pure core of leadership-state.ts: the session
 * (created, renewed at half its TTL), a blocking read of the key (who holds it, what data it
 * carries), and an acquire whenever the key is free. The value carries the data, so a new
 * leader goes on from what the last one published.
 */

export interface ConsulLeadershipOptions<T> {
  /** `http://host:port` or `https://` of a Consul agent, as the discovery's. */
  address: string;
  /** https: the CA that signed Consul's certificate; absent: the system's trust store. */
  caFile?: string;
  /** https: a client certificate and key (`verify_incoming`), the name in Consul's certificate. */
  certFile?: string;
  keyFile?: string;
  tlsServerName?: string;
  token?: string;
  /** A file whose first line is the token, re-read when it changes; not with `token`. */
  tokenFile?: string;
  datacenter?: string;
  /** Enterprise: the namespace and partition of the key and the session. */
  namespace?: string;
  partition?: string;
  /**
   * The checks the session is bound to. Default none, the TTL alone: Consul's own default
   * (`serfHealth` of the node the request lands on) would tie the leadership to whichever node a
   * load-balanced Consul address picked.
   */
  nodeChecks?: readonly string[];
  timeoutMarginMs?: number;
  maxBodyBytes?: number;
  /** How long Consul holds a read of the key (default 60 s): below any proxy's idle timeout. */
  waitMs?: number;
  /** The KV key whose lock is the leadership, e.g. `hafleet/rollout-leader`. */
  key: string;
  /** Default 15 s. Consul refuses less than its `session_ttl_min` (10 s unless configured). */
  sessionTtlMs?: number;
  /**
   * How long Consul keeps the key from everyone after the leader's session ends. Default 15 s,
   * at most 60 s. A leader whose session Consul ends early (destroyed, its node's check
   * critical) learns of it by its next renewal at the latest, half a TTL on: a lock-delay at
   * least that long keeps it from overlapping with the next leader.
   */
  lockDelayMs?: number;
  replica: Replica;
  /** The data's schema: a value that fails it is read as no data. */
  data: z.ZodType<T>;
  logger: Logger;
  clock?: WatchClock;
}

export type LeadershipListener<T> = (view: LeadershipView<T>) => void;

export const DEFAULT_SESSION_TTL_MS = 15_000;
export const DEFAULT_LOCK_DELAY_MS = 15_000;

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
  nodeChecks: z.array(z.string().min(1)).optional(),
  waitMs: z.number().int().min(1).max(MAX_WAIT_MS).optional(),
  timeoutMarginMs: z.number().int().min(0).optional(),
  maxBodyBytes: z.number().int().min(1).optional(),
  key: z
    .string()
    .min(1, "must not be empty")
    .refine((key) => !key.startsWith("/"), "must not begin with '/'"),
  sessionTtlMs: z.number().int().min(1).max(86_400_000, "must be at most 24 h (Consul's limit)").optional(),
  lockDelayMs: z.number().int().min(0).max(60_000, "must be at most 60 s (Consul applies no more)").optional(),
  replica: replicaSchema,
  data: z.custom<z.ZodType>((value) => value instanceof z.ZodType, "must be a zod schema"),
  logger: z.custom<Logger>((value) => typeof value === "object" && value !== null, "must be a pino logger"),
});

export class ConsulLeadership<T> {
  private readonly api: ConsulLockApi;
  private readonly client: ConsulClient;
  private readonly waitMs: number;
  private readonly agent: http.Agent;
  private readonly timing: Timing;
  private readonly clock: WatchClock;
  private readonly key: string;
  private readonly replica: Replica;
  private readonly logger: Logger;
  private readonly listeners = new Set<LeadershipListener<T>>();
  private state: LeadershipState<T> = initialState<T>();
  private shown: LeadershipView<T> = { leading: false, leader: null, data: null };
  private controller: AbortController | null = null;
  private stopped = false;
  private loops: Promise<void>[] = [];
  private acquiring: Promise<void> | null = null;
  private fence: AbortController | null = null;
  /** The ModifyIndex of the last unusable value logged: one error per bad value, not per read. */
  private reportedProblemAt = -1;

  constructor(private readonly options: ConsulLeadershipOptions<T>) {
    const checked = optionsSchema.safeParse(options);
    if (!checked.success) throw new InvalidInputError("Consul leadership options", issuesOf(checked.error, options));
    this.agent = consulAgent(options.address, {
      ...(options.caFile === undefined ? {} : { caFile: options.caFile }),
      ...(options.certFile === undefined ? {} : { certFile: options.certFile }),
      ...(options.keyFile === undefined ? {} : { keyFile: options.keyFile }),
      ...(options.tlsServerName === undefined ? {} : { tlsServerName: options.tlsServerName }),
    });
    const token = options.tokenFile === undefined ? options.token : tokenFromFile(options.tokenFile, (message) => this.logger.error({ key: options.key }, message));
    this.key = options.key;
    this.replica = { ...options.replica };
    this.logger = options.logger;
    this.clock = options.clock ?? systemClock;
    this.timing = { sessionTtlMs: options.sessionTtlMs ?? DEFAULT_SESSION_TTL_MS, lockDelayMs: options.lockDelayMs ?? DEFAULT_LOCK_DELAY_MS };
    const client = new ConsulClient({
      address: options.address,
      // The client's health settings: KV and session calls do not use them.
      healthy: "passing",
      weights: "meta",
      waitMs: options.waitMs ?? DEFAULT_WAIT_MS,
      agent: this.agent,
      ...(token === undefined ? {} : { token }),
      ...(options.datacenter === undefined ? {} : { datacenter: options.datacenter }),
      ...(options.namespace === undefined ? {} : { namespace: options.namespace }),
      ...(options.partition === undefined ? {} : { partition: options.partition }),
      ...(options.timeoutMarginMs === undefined ? {} : { timeoutMarginMs: options.timeoutMarginMs }),
      ...(options.maxBodyBytes === undefined ? {} : { maxBodyBytes: options.maxBodyBytes }),
    });
    this.client = client;
    this.waitMs = options.waitMs ?? DEFAULT_WAIT_MS;
    this.api = new ConsulLockApi(client, this.key, this.waitMs);
  }

  start(): void {
    if (this.stopped) throw new Error(`the leadership on Consul key '${this.key}' was stopped; make a new one`);
    if (this.controller !== null) return;
    this.controller = new AbortController();
    const signal = this.controller.signal;
    this.loops = [this.keepSession(signal), this.followKey(signal)];
  }

  /**
   * Leads no more at once, releases the key (`?release`, so the next leader need not wait out
   * the lock-delay that a destroyed session would start), then destroys the session; each
   * within a third of the TTL.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const held = this.state.session?.id;
    const holding = held !== undefined && this.state.key?.holder === held;
    const carried = this.state.key?.data ?? null;
    this.update(sessionLost(this.state));
    this.controller?.abort(new Error(`leadership on Consul key '${this.key}' stopped`));
    await Promise.all([...this.loops, this.acquiring]);
    // A create whose answer came in as the loop stopped leaves a session behind it too.
    const late = this.state.session?.id;
    this.update(sessionLost(this.state));
    const ids = [...new Set([held, late])].filter((id): id is string => id !== undefined);
    if (holding) await this.release(held, carried);
    await Promise.all(ids.map((id) => this.destroy(id)));
    this.agent.destroy();
  }

  private async release(session: string, data: T | null): Promise<void> {
    try {
      const released = await this.api.release(session, encodeLeaderValue({ leader: this.replica, data }), requestTimeoutMs(this.timing.sessionTtlMs));
      if (released) this.logger.info({ replica: this.replica.id, key: this.key, session }, "leadership key released: the next leader need not wait for the lock-delay");
    } catch (error) {
      this.logger.warn({ replica: this.replica.id, key: this.key, session, err: error }, "cannot release the leadership key: destroying the session frees it after the lock-delay");
    }
  }

  private async destroy(session: string): Promise<void> {
    try {
      await this.api.destroySession(session, requestTimeoutMs(this.timing.sessionTtlMs));
      this.logger.info({ replica: this.replica.id, key: this.key, session }, "Consul session destroyed");
    } catch (error) {
      this.logger.warn({ replica: this.replica.id, key: this.key, session, err: error }, "cannot destroy the Consul session: Consul releases the key when its TTL runs out");
    }
  }

  /** The session this replica holds now (renewed by this leadership), or null while it has none. */
  sessionId(): string | null {
    return this.state.session?.id ?? null;
  }

  /** Another key on the same Consul connection (token, TLS, datacenter, blocking wait), e.g. to share state under the session. */
  keyApi(key: string): ConsulLockApi {
    return new ConsulLockApi(this.client, key, this.waitMs);
  }

  /** The session's TTL: a request made under it should take at most a third of it. */
  requestTimeoutMs(): number {
    return requestTimeoutMs(this.timing.sessionTtlMs);
  }

  leading(): boolean {
    return isLeading(this.state, this.timing.sessionTtlMs, this.clock.now());
  }

  view(): LeadershipView<T> {
    return viewOf(this.state, this.replica, this.timing.sessionTtlMs, this.clock.now());
  }

  /** Told of every change of leading, leader or data; returns the unsubscribe. */
  onChange(listener: LeadershipListener<T>): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Writes `data` under our lock; Consul refuses it unless our session still holds the key. */
  async publish(data: T): Promise<void> {
    const checked = checkPublished(data, this.options.data, this.key);
    const session = this.state.session;
    if (session === null || this.controller === null || !this.leading()) throw new NotLeaderError(this.key, this.view().leader);
    const written = await this.api.acquire(session.id, encodeLeaderValue({ leader: this.replica, data: checked }), requestTimeoutMs(this.timing.sessionTtlMs), this.controller.signal);
    if (!written) {
      this.update(acquireRefused(this.state, session.id, this.clock.now(), this.timing));
      throw new LeadershipLostError(this.key);
    }
    this.update(acquired(this.state, session.id, this.replica, checked));
  }

  // ---- The session: created, renewed at half its TTL, made anew when Consul forgot it ----

  private async keepSession(signal: AbortSignal): Promise<void> {
    const ttl = this.timing.sessionTtlMs;
    const timeoutMs = requestTimeoutMs(ttl);
    let failures = 0;
    let retryAt = 0;
    while (!signal.aborted) {
      const lease = this.state.session;
      if (lease === null) {
        const sentAt = this.clock.now();
        try {
          const id = await this.api.createSession({ name: `hafleet-controller ${this.replica.id}`, ttlMs: ttl, lockDelayMs: this.timing.lockDelayMs, nodeChecks: this.options.nodeChecks ?? [] }, timeoutMs, signal);
          failures = 0;
          this.logger.info({ replica: this.replica.id, key: this.key, session: id }, "Consul session created");
          this.update(sessionConfirmed(this.state, id, sentAt));
          this.tryAcquire(signal);
        } catch (error) {
          if (signal.aborted) break;
          failures += 1;
          this.logger.warn({ replica: this.replica.id, key: this.key, failures, err: error }, "cannot create a Consul session; retrying");
          await this.clock.sleep(retryDelayMs(failures, ttl, Math.random), signal);
        }
        continue;
      }
      await this.clock.sleep((failures === 0 ? renewDueAt(lease, ttl) : retryAt) - this.clock.now(), signal);
      if (signal.aborted) break;
      const sentAt = this.clock.now();
      try {
        const outcome = await this.api.renewSession(lease.id, timeoutMs, signal);
        if (outcome === "gone") {
          this.logger.warn({ replica: this.replica.id, key: this.key, session: lease.id }, "Consul no longer knows the session: it expired and its lock went with it; following, with a new session");
          this.update(sessionLost(this.state));
        } else {
          if (failures > 0) this.logger.info({ replica: this.replica.id, key: this.key, session: lease.id, failures }, "Consul session renewed again");
          this.update(sessionConfirmed(this.state, lease.id, sentAt));
        }
        failures = 0;
      } catch (error) {
        if (signal.aborted) break;
        failures += 1;
        const leaseEndsIn = leaseEnd(lease, ttl) - this.clock.now();
        retryAt = this.clock.now() + renewRetryMs(classifyFailure(error), failures, ttl, leaseEndsIn, Math.random);
        this.logger.warn({ replica: this.replica.id, key: this.key, session: lease.id, failures, leaseEndsInMs: leaseEndsIn, err: error }, "cannot renew the Consul session; retrying (no leading past the lease)");
      }
    }
  }

  // ---- The key: followed by blocking reads, as a discovery watch follows a service ----

  private followKey(signal: AbortSignal): Promise<void> {
    return followBlocking<KeyAnswer>(
      {
        clock: this.clock,
        read: (index, readSignal) => this.api.readKey(index, readSignal),
        answered: (answer) => {
          this.absorb(answer);
          this.tryAcquire(signal);
        },
        failed: (error, failures) => this.logger.warn({ replica: this.replica.id, key: this.key, failures, err: error }, "cannot read the leadership key; retrying"),
        recovered: (failures) => this.logger.info({ replica: this.replica.id, key: this.key, failures }, "leadership key readable again"),
        retryDelayMs: (failures) => retryDelayMs(failures, this.timing.sessionTtlMs, Math.random),
      },
      signal,
    );
  }

  private absorb(answer: KeyAnswer): void {
    const entry = answer.entry;
    const reading = entry === null ? { leader: null, data: null, problem: null } : readLeaderValue(entry.value, this.options.data, this.key);
    if (entry !== null && reading.problem !== null && entry.modifyIndex !== this.reportedProblemAt) {
      this.reportedProblemAt = entry.modifyIndex;
      this.logger.error({ replica: this.replica.id, key: this.key, problem: reading.problem }, "the leadership key holds an unusable value: read as no data; the leader overwrites it when it next publishes");
    }
    this.update(keyRead(this.state, { holder: entry?.session ?? null, leader: reading.leader, data: reading.data }));
  }

  // ---- The lock: tried whenever the key is free, again after a refusal (a lock-delay ends unannounced) ----

  private tryAcquire(signal: AbortSignal): void {
    if (this.acquiring !== null || signal.aborted || !shouldAcquire(this.state, this.clock.now())) return;
    this.acquiring = this.acquireWhileFree(signal).finally(() => {
      this.acquiring = null;
    });
  }

  private async acquireWhileFree(signal: AbortSignal): Promise<void> {
    while (!signal.aborted && shouldAcquire(this.state, this.clock.now())) {
      const session = this.state.session!;
      // What the key held when last read free: the last leader's data, carried on.
      const carried = this.state.key!.data;
      try {
        const won = await this.api.acquire(session.id, encodeLeaderValue({ leader: this.replica, data: carried }), requestTimeoutMs(this.timing.sessionTtlMs), signal);
        if (won) {
          this.update(acquired(this.state, session.id, this.replica, carried));
          return;
        }
        this.update(acquireRefused(this.state, session.id, this.clock.now(), this.timing));
      } catch (error) {
        if (signal.aborted) return;
        this.logger.warn({ replica: this.replica.id, key: this.key, session: session.id, err: error }, "cannot try for the leadership lock; retrying");
        this.update(acquireDeferred(this.state, this.clock.now(), this.timing));
      }
      // A timer may fire a millisecond before Date.now() reaches its end: slept again rather than
      // taken as "not free", which would end the loop with nobody left to try for a free key.
      while (!signal.aborted && this.clock.now() < this.state.acquireNotBefore) await this.clock.sleep(Math.max(1, this.state.acquireNotBefore - this.clock.now()), signal);
    }
  }

  // ---- Telling: the view, its listeners, and the lease's end as a moment of its own ----

  private update(next: LeadershipState<T>): void {
    this.state = next;
    const now = this.clock.now();
    this.armFence(now);
    const view = viewOf(this.state, this.replica, this.timing.sessionTtlMs, now);
    if (sameView(view, this.shown)) return;
    const before = this.shown;
    this.shown = view;
    this.logChange(before, view);
    for (const listener of this.listeners) {
      try {
        listener(view);
      } catch (error) {
        this.logger.error({ replica: this.replica.id, key: this.key, err: error }, "a leadership listener threw");
      }
    }
  }

  /** Nothing else happens when a lease runs out: a timer makes it an event. */
  private armFence(now: number): void {
    this.fence?.abort();
    this.fence = null;
    const session = this.state.session;
    if (this.stopped || session === null || !isLeading(this.state, this.timing.sessionTtlMs, now)) return;
    const fence = new AbortController();
    this.fence = fence;
    void this.clock.sleep(leaseEnd(session, this.timing.sessionTtlMs) - now, fence.signal).then(() => {
      if (!fence.signal.aborted) this.update(this.state);
    });
  }

  private logChange(before: LeadershipView<T>, after: LeadershipView<T>): void {
    const fields = { replica: this.replica.id, key: this.key, session: this.state.session?.id };
    if (after.leading && !before.leading) this.logger.info(fields, "leading: this replica holds the leadership lock");
    else if (before.leading && !after.leading) this.logger.warn(fields, this.stopped ? "stopped leading" : "no longer leading: the lock or the session's lease is gone");
    else if (after.leader?.id !== before.leader?.id) this.logger.info({ ...fields, leader: after.leader?.id ?? null }, "leader changed");
  }
}
