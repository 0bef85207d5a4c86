import type { Logger } from "pino";
import { EVERY_BACKEND, notManagedReason, partitionManaged, type ManagedBackends } from "../model/manage-patterns.js";
import type { StepAction } from "../reconcile/planner.js";
import { describeWorkerChange } from "../runtime/worker.js";
import { clientCredentials } from "../tls/client-credentials.js";
import type { TlsFiles } from "../tls/tls-files.js";
import { helloSchema, parseMessage, type BackendResult, type DesiredPush, type Hello, type ObservedReport } from "../../proto/messages.js";
import type { Applier, SocketApply } from "./applier.js";
import { backendFailures, backendResults, refusedResults } from "./backend-results.js";
import { ControllerLink, type ControllerInput, type LinkSession } from "./controller-link.js";
import { appliedVersions, emptyDesiredSet, LocalStore, markApplied, mergePush, type DesiredSet } from "./local-store.js";
import { observedReport } from "./observed-report.js";
import type { RunnerObserver } from "./runner-observer.js";

export interface AgentRunnerOptions {
  agentId: string;
  labels: Readonly<Record<string, string>>;
  hafleetVersion: string;
  /** The backends this agent may change (absent: every backend); a push for another is nacked. */
  manage?: ManagedBackends;
  /** HOST:PORT of the controllers, tried in order. */
  controllers: readonly string[];
  applier: Applier;
  stateDir: string;
  /** Reconcile the stored desired state this often, whatever the controller does. */
  resyncMs: number;
  heartbeatMs?: number;
  deadAfterMs?: number;
  /**
   * How often to ask each HAProxy, on a fresh connection, which process serves (a reload or
   * restart loses runtime changes): the bound on how long a replaced worker goes unrepaired.
   */
  probeMs?: number;
  /** While drains run, how often to look whether they are done (at the latest when one is due). */
  drainPollMs?: number;
  connectTimeoutMs?: number;
  backoff?: { initialMs: number; maxMs: number };
  /** mTLS to the controller: the fleet CA, this agent's certificate (for its id) and key. */
  tls?: TlsFiles;
  observer?: RunnerObserver;
  logger: Logger;
}

type ApplyKind = "startup" | "resync" | "reconnect" | "drain-check";

/** Changes that only finish a drain hafleet started: routine, not drift. */
const DRAIN_FOLLOW_UPS = new Set<StepAction>(["maint", "delete"]);

/**
 * Servers a reconcile of an unchanged desired state had to change: HAProxy was restarted or
 * someone changed them by hand. One entry per server and socket.
 */
export function repairedServers(sockets: readonly SocketApply[]): Array<{ socket: string; backend: string; server: string; action: StepAction; endpoint: string | null }> {
  const repaired = new Map<string, { socket: string; backend: string; server: string; action: StepAction; endpoint: string | null }>();
  for (const socket of sockets) {
    if ("error" in socket) continue;
    for (const outcome of socket.outcomes) {
      const { step } = outcome;
      const key = `${socket.socket}\n${step.backend}/${step.server}`;
      if (!outcome.ok || DRAIN_FOLLOW_UPS.has(step.action) || repaired.has(key)) continue;
      repaired.set(key, { socket: socket.socket, backend: step.backend, server: step.server, action: step.action, endpoint: step.endpoint });
    }
  }
  return [...repaired.values()];
}

/**
 * The agent's run mode: the stored desired state applied at start (before any controller is
 * reachable), then kept in step with the controller's pushes, re-applied periodically and
 * whenever an HAProxy comes back. One apply at a time, in arrival order.
 */
export class AgentRunner {
  private readonly log: Logger;
  private readonly store: LocalStore;
  private readonly link: ControllerLink;
  private desired: DesiredSet = emptyDesiredSet();
  /** The set last written to the store. */
  private stored: DesiredSet = this.desired;
  private observed: ObservedReport = observedReport([], [], { repaired: false });
  private session: LinkSession | null = null;
  /** The digest of the last report sent on the current stream. */
  private sentDigest: string | null = null;
  private queue: Promise<void> = Promise.resolve();
  private resyncQueued = false;
  private stopping = false;
  private started = false;
  private probing: Promise<void> | null = null;
  private readonly socketErrors = new Map<string, string>();
  /** Sockets whose HAProxy was replaced, with the reason and the applies started before it was seen. */
  private readonly repairing = new Map<string, { reason: string; appliesBefore: number }>();
  private appliesStarted = 0;
  /** What the last apply found, per socket: a repairing report is built from it. */
  private lastReports: SocketApply[] = [];
  private resyncTimer: NodeJS.Timeout | null = null;
  private probeTimer: NodeJS.Timeout | null = null;
  private drainTimer: NodeJS.Timeout | null = null;

  constructor(private readonly options: AgentRunnerOptions) {
    // Checked here, not by the controller after connecting: a bad id would only loop.
    parseMessage(helloSchema.pick({ agentId: true, labels: true }), { agentId: options.agentId, labels: options.labels }, "agent identity");
    this.log = options.logger.child({ agent: options.agentId });
    this.store = new LocalStore(options.stateDir, this.log);
    this.link = new ControllerLink(
      {
        hello: () => this.hello(),
        opened: (session) => this.opened(session),
        received: (input, session) => this.received(input, session),
        closed: (session) => {
          if (this.session !== session) return;
          this.session = null;
          this.options.observer?.controllerDisconnected();
        },
      },
      {
        addresses: options.controllers,
        heartbeatMs: options.heartbeatMs ?? 5_000,
        deadAfterMs: options.deadAfterMs ?? 15_000,
        logger: this.log,
        ...(options.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: options.connectTimeoutMs }),
        ...(options.backoff === undefined ? {} : { backoff: options.backoff }),
        ...(options.tls === undefined ? {} : { credentials: clientCredentials(options.tls) }),
      },
    );
  }

  /** Applies the stored state, then connects; resolves once the stored state was applied. */
  async start(): Promise<void> {
    if (this.started) throw new Error("AgentRunner.start() called twice");
    this.started = true;
    this.desired = this.forgetUnmanaged(await this.store.load());
    this.stored = this.desired;
    this.log.info({ backends: this.desired.backends.size, version: this.desired.version, file: this.store.path }, "stored desired state loaded, applying it");
    await this.enqueue(() => this.resync("startup"));
    if (this.stopping) return;
    this.link.start();
    this.resyncTimer = setInterval(() => this.requestResync("resync"), this.options.resyncMs);
    this.probeTimer = setInterval(() => this.probe(), this.options.probeMs ?? 250);
  }

  /** The apply under way finishes; waiting pushes are dropped (the controller resends them). */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const timer of [this.resyncTimer, this.probeTimer]) if (timer) clearInterval(timer);
    if (this.drainTimer) clearTimeout(this.drainTimer);
    await this.link.stop();
    await this.queue;
    await this.probing;
    if (this.desired !== this.stored) await this.save(this.desired).catch((error: unknown) => this.log.error({ err: error, file: this.store.path }, "cannot store applied versions"));
    await this.options.applier.close();
  }

  private async hello(): Promise<Hello> {
    // The controller is told only of what it may change here.
    const sockets = (await this.options.applier.inventory()).map((socket) => ({ ...socket, backends: socket.backends.filter((backend) => this.manage.manages(backend.name)) }));
    return {
      agentId: this.options.agentId,
      labels: { ...this.options.labels },
      hafleetVersion: this.options.hafleetVersion,
      sockets,
      appliedVersions: appliedVersions(this.desired),
    };
  }

  private get manage(): ManagedBackends {
    return this.options.manage ?? EVERY_BACKEND;
  }

  /**
   * Stored backends that a since-narrowed `manage` no longer covers are forgotten, never applied:
   * the hello then does not claim them, and the controller's next push of one is nacked.
   */
  private forgetUnmanaged(set: DesiredSet): DesiredSet {
    const { managed, unmanaged } = partitionManaged([...set.backends.values()], this.manage);
    if (unmanaged.length === 0) return set;
    this.log.warn({ backends: unmanaged.map((backend) => backend.name), manage: this.manage.patterns }, "stored backends not managed on this host: forgotten, HAProxy left alone");
    return { version: set.version, backends: new Map(managed.map((backend) => [backend.name, backend])) };
  }

  private opened(session: LinkSession): void {
    this.session = session;
    this.options.observer?.controllerConnected();
    this.sentDigest = null;
    this.sendObserved();
  }

  private received(input: Extract<ControllerInput, { kind: "push" | "invalid-push" }>, session: LinkSession): void {
    this.options.observer?.pushReceived();
    if (input.kind === "push") void this.enqueue(() => this.applyPush(input.push, session));
    else void this.enqueue(async () => this.respond(session, input.nonce, refusedResults(input.backends, input.error, this.appliedVersionOf)));
  }

  private enqueue(task: () => Promise<void>): Promise<void> {
    const run = this.queue.then(async () => {
      if (this.stopping) return;
      try {
        await task();
      } catch (error) {
        this.log.error({ err: error }, "apply failed unexpectedly");
      }
    });
    this.queue = run;
    return run;
  }

  private requestResync(kind: ApplyKind): void {
    if (this.resyncQueued || this.stopping) return;
    this.resyncQueued = true;
    void this.enqueue(async () => {
      this.resyncQueued = false;
      await this.resync(kind);
    });
  }

  private async applyPush(push: DesiredPush, session: LinkSession): Promise<void> {
    // Not the push's version in the child: the per-backend lines carry their own, and pino
    // would write a second "version" key that most log tools drop.
    const log = this.log.child({ nonce: push.nonce });
    // Backends outside `manage` reach neither the store nor HAProxy: nacked, the rest applied.
    const { managed, unmanaged } = partitionManaged(push.backends, this.manage);
    const notManaged = refusedResults(unmanaged, notManagedReason(this.manage), this.appliedVersionOf);
    const merged = mergePush(this.desired, { ...push, backends: managed });
    try {
      await this.save(merged);
    } catch (error) {
      // Applying what cannot be stored would be lost at the next restart: refuse it whole.
      const reason = `not applied: the agent cannot store its desired state in ${this.store.path} (${(error as Error).message})`;
      log.error({ err: error, version: push.version }, "cannot store the pushed desired state; push refused");
      this.respond(session, push.nonce, [...refusedResults(managed, reason, this.appliedVersionOf), ...notManaged]);
      return;
    }
    this.desired = merged;
    log.info({ version: push.version, backends: managed.map((backend) => backend.name), removed: push.removedBackends }, "push stored, applying");
    const failures = await this.apply(false);
    const results = [...backendResults(managed, failures, this.appliedVersionOf), ...notManaged];
    for (const result of results) {
      if (result.error === "") log.info({ backend: result.backend, version: result.version }, "backend applied");
      else log.warn({ backend: result.backend, version: result.version, appliedVersion: result.appliedVersion, error: result.error }, "backend not applied: nack");
    }
    this.respond(session, push.nonce, results, this.unsentObserved(session));
  }

  /**
   * Not awaited: a controller that stops reading must not hold up the applies behind this one.
   * The stream keeps the order; a response to a push from a stream now closed is dropped.
   */
  private respond(session: LinkSession, nonce: string, results: BackendResult[], observed: ObservedReport | null = null): void {
    for (const result of results) {
      if (result.error === "") this.options.observer?.acked(result.backend);
      else this.options.observer?.nacked(result.backend);
    }
    void session.send({ response: { nonce, results, observed } });
  }

  private async resync(kind: ApplyKind): Promise<void> {
    // After a replaced HAProxy, re-applying everything is expected: the controller was told
    // (repairing) and is told the outcome; it is not drift, and one line says it, not one per server.
    const replaced = kind === "reconnect";
    await this.apply(!replaced, (reports) => {
      const repaired = repairedServers(reports);
      if (replaced) {
        this.log.info({ kind, servers: repaired.length }, "desired state re-applied to the new HAProxy process");
        return;
      }
      for (const { socket, backend, server, action, endpoint } of repaired) {
        this.log.warn({ kind, socket, backend, server, action, endpoint }, "drift: HAProxy did not run the desired state; repaired");
        this.options.observer?.driftRepaired(backend);
      }
    });
    this.sendObserved();
  }

  /** Applies the desired set everywhere; records what succeeded; returns backend -> error. */
  private async apply(repaired: boolean, inspect?: (reports: SocketApply[]) => void): Promise<Map<string, string>> {
    const desired = this.desired;
    const started = ++this.appliesStarted;
    const reports = await this.options.applier.apply(desired);
    // This apply read and changed the process that serves now: what it reports is no longer from before.
    for (const [socket, repair] of this.repairing) if (repair.appliesBefore < started) this.repairing.delete(socket);
    this.lastReports = reports;
    this.noteSocketErrors(reports);
    inspect?.(reports);
    const failures = backendFailures(desired.backends.keys(), reports);
    this.options.observer?.applied(reports.every((report) => "error" in report) ? "failed" : failures.size === 0 ? "converged" : "partial");
    const marked = markApplied(desired, failures);
    // The marks are stored with the next push, or at stop, not now: a restart applies the
    // stored state before it says hello and marks it again, so losing them costs nothing, and
    // writing them would double the fsyncs of every push.
    this.desired = marked;
    this.scheduleDrainCheck(reports);
    this.observed = observedReport([...marked.backends.values()], reports, { repaired, repairing: this.repairingReasons() });
    return failures;
  }

  private async save(set: DesiredSet): Promise<void> {
    await this.store.save(set);
    this.stored = set;
  }

  /** What HAProxy runs, as last reported (or to be reported) to the controller. */
  get observedReport(): ObservedReport {
    return this.observed;
  }

  private readonly appliedVersionOf = (backend: string): string => this.desired.backends.get(backend)?.appliedVersion ?? "";

  private sendObserved(): void {
    const session = this.session;
    if (session === null) return;
    const observed = this.unsentObserved(session);
    if (observed !== null) void session.send({ observed });
  }

  /** The current report if this stream has not had it yet (it is then counted as sent). */
  private unsentObserved(session: LinkSession): ObservedReport | null {
    if (session !== this.session || !session.open || this.observed.digest === this.sentDigest) return null;
    this.sentDigest = this.observed.digest;
    return this.observed;
  }

  /** Logs a socket's failure when it starts or changes, and its recovery: not every resync. */
  private noteSocketErrors(reports: readonly SocketApply[]): void {
    for (const report of reports) {
      const previous = this.socketErrors.get(report.socket);
      if ("error" in report) {
        if (previous !== report.error) this.log.error({ socket: report.socket, err: report.error }, "cannot apply to this HAProxy");
        this.socketErrors.set(report.socket, report.error);
      } else if (previous !== undefined) {
        this.socketErrors.delete(report.socket);
        this.log.info({ socket: report.socket }, "HAProxy reachable again");
      }
    }
  }

  /** Drains end on their own clock: come back when the first is due, or sooner to catch idle ones. */
  private scheduleDrainCheck(reports: readonly SocketApply[]): void {
    if (this.drainTimer) clearTimeout(this.drainTimer);
    this.drainTimer = null;
    const due = reports.flatMap((report) => ("error" in report || report.final.nextCheckAt === null ? [] : [report.final.nextCheckAt]));
    if (due.length === 0 || this.stopping) return;
    const delay = Math.max(0, Math.min(Math.min(...due) - Date.now(), this.options.drainPollMs ?? 2_000));
    this.drainTimer = setTimeout(() => this.requestResync("drain-check"), delay);
  }

  private repairingReasons(): Map<string, string> {
    return new Map([...this.repairing].map(([socket, repair]) => [socket, repair.reason]));
  }

  /**
   * A replaced HAProxy is reported at once as being repaired (what the agent last saw is from
   * the old process), then repaired like a push, ahead of the periodic resync.
   */
  private probe(): void {
    if (this.probing || this.stopping) return;
    this.probing = (async () => {
      try {
        const changes = await this.options.applier.workerChanges();
        if (changes.length === 0) return;
        for (const { socket, change } of changes) {
          const reason = describeWorkerChange(change);
          if (change.kind === "gone") {
            this.log.warn({ socket }, `${reason}: reporting it`);
            continue;
          }
          this.log.warn({ socket, worker: change.to }, `${reason}: re-applying the desired state`);
          this.repairing.set(socket, { reason, appliesBefore: this.appliesStarted });
        }
        if (this.repairing.size > 0) {
          this.observed = observedReport([...this.desired.backends.values()], this.lastReports, { repaired: false, repairing: this.repairingReasons() });
          this.sendObserved();
        }
        this.requestResync("reconnect");
      } catch (error) {
        this.log.warn({ err: error }, "HAProxy probe failed");
      }
    })().finally(() => {
      this.probing = null;
    });
  }
}
