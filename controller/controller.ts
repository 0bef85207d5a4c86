import { readFile } from "node:fs/promises";
import type { Logger } from "pino";
import { InvalidInputError } from "../agent/errors.js";
import { MIN_TOKEN_LENGTH } from "./config/check-controller-files.js";
import { AuditLog } from "./http/audit-log.js";
import type { ControllerConfig } from "./config/controller-config.js";
import { Debouncer } from "./core/debouncer.js";
import { loadRanBefore, mappingKey, sameMapping, saveRanBefore, type RanBefore } from "./core/desired-file.js";
import { DesiredStore, mappingWatchKey, type DesiredBackendState } from "./core/desired-store.js";
import { ConsulSource } from "./discovery/consul/consul-source.js";
import { systemClock } from "./discovery/consul/consul-watch.js";
import type { DiscoveryObserver } from "./discovery/consul/consul-watch.js";
import { FileSource } from "./discovery/file-source.js";
import type { DiscoverySource } from "./discovery/service-snapshot.js";
import { ActionRefused, startApiServer, type RunningApiServer } from "./http/api-server.js";
import { STATUS_PAGE } from "./http/page/status-page.js";
import { ControllerMetrics } from "./metrics/controller-metrics.js";
import { RolloutCoordinator, stagedBackendsSchema } from "./rollout/rollout-coordinator.js";
import { followLeadership, leaderName, persistenceIn, rolloutLeadership, type RolloutLeadership } from "./rollout/rollout-leadership.js";
import { RolloutStore } from "./rollout/rollout-store.js";
import { FleetServer } from "./server/fleet-server.js";
import { Cordons } from "./rollout/cordons.js";
import { loadChanges, saveChanges } from "./status/change-file.js";
import { DiscoveryHealthTracker } from "./status/discovery-health.js";
import { loadFreeze, saveFreeze } from "./status/freeze-file.js";
import { StatusService } from "./status/status-service.js";
import { FleetShare, type SharedFreeze } from "./leadership/fleet-share.js";
import { transportFor } from "./tls/transport-policy.js";

/** The status's rolloutLeader: who leads, and whether that is this replica. */
function describeLeadership(leadership: RolloutLeadership | null): string | null {
  const view = leadership?.view();
  const leader = leaderName(view?.leader ?? null);
  return leader === null ? null : view!.leading ? `${leader} (this replica)` : leader;
}

export interface RunningController {
  port: number;
  /** The status API's port; null when config.http.listen is null. */
  httpPort: number | null;
  store: DesiredStore;
  server: FleetServer;
  status: StatusService;
  rollouts: RolloutCoordinator;
  /** null unless config.leadership is set. */
  leadership: RolloutLeadership | null;
  close(): Promise<void>;
}

export interface ControllerOptions {
  /** hafleet's version, as the status reports it. */
  version?: string;
  source?: DiscoverySource;
  clock?: () => number;
  /** How often the current rollout wave is judged (default 1 s). */
  rolloutTickMs?: number;
}

/**
 * Wires discovery -> desired store -> gRPC server: one watch per (service, tag), changes
 * debounced, then every idle agent is sent what it lacks; staged backends go through the
 * rollout coordinator; beside it all, the status API, the page and the metrics.
 */
export async function startController(config: ControllerConfig, logger: Logger, options: ControllerOptions = {}): Promise<RunningController> {
  const clock = options.clock ?? Date.now;
  // Pushes wait for every backend's first answer, but not for ever: one failing service must not hold back the fleet.
  const readyWaitMs = "consul" in config.discovery ? config.discovery.consul.readyWaitMs : 10_000;
  const store = new DesiredStore(config.backends, { maxDropShare: config.guards.maxDropShare, maxServers: config.limits.serversPerBackend }, { readyWaitMs, clock });
  let rollouts: RolloutCoordinator | undefined;
  const server = new FleetServer((agent, labels) => rollouts!.resolve(agent, store.backendsFor(labels)), {
    heartbeatMs: config.agents.heartbeatMs,
    deadAfterMs: config.agents.deadAfterMs,
    forgetAfterMs: config.agents.forgetAfterMs,
    maxAgents: config.agents.max,
    maxConnectionAgeMs: config.agents.maxConnectionAgeMs,
    limits: config.limits,
    transport: transportFor(config),
    ready: () => store.ready(),
    pending: (labels) => store.pendingFor(labels),
    logger,
    clock,
  });
  const backendsOfKey = new Map<string, string[]>();
  for (const mapping of config.backends) {
    const key = mappingWatchKey(mapping);
    backendsOfKey.set(key, [...(backendsOfKey.get(key) ?? []), mapping.backend]);
  }
  const discoveryHealth = new DiscoveryHealthTracker(backendsOfKey);
  const cordons = await Cordons.load(config.stateDir);
  const { discovery } = config;
  const leadership = config.leadership === undefined || !("consul" in discovery) ? null : rolloutLeadership(config.leadership, discovery.consul, logger);
  // With leadership on Consul, replicas share their agents and the freeze under the fleet prefix.
  let share: FleetShare | null = null;
  const status = new StatusService({
    server,
    store,
    rolloutSide: (agent) => rollouts!.side(agent),
    rollout: () => rollouts!.status(),
    controller: { version: options.version ?? "dev", startedAt: clock() },
    ...(config.leadership === undefined ? {} : { rolloutLeader: () => describeLeadership(leadership) }),
    mapped: config.backends.map((mapping) => mapping.backend),
    discovery: () => discoveryHealth.health(),
    cordoned: (agent) => cordons.reason(agent),
    clock,
    ...(leadership === null ? {} : { fleet: { replica: config.leadership!.replica, peers: () => share?.peers() ?? [], truncated: () => share?.truncated() ?? null } }),
  });
  if (config.stateDir !== undefined) {
    try {
      status.changes.restore(await loadChanges(config.stateDir));
    } catch (error) {
      logger.error({ err: error, stateDir: config.stateDir }, "cannot read the stored recent changes: starting with none");
    }
  }
  let savingChanges: Promise<void> = Promise.resolve();
  /** The recent changes, stored after each event that may end one (coalesced: one write at a time). */
  let changesDirty = false;
  const rememberChanges = (): void => {
    const stateDir = config.stateDir;
    if (stateDir === undefined || changesDirty) return;
    changesDirty = true;
    savingChanges = savingChanges
      .then(() => {
        changesDirty = false;
        return saveChanges(stateDir, status.changes.list());
      })
      .catch((error: unknown) => logger.error({ err: error, stateDir }, "cannot store the recent changes: a restart would forget how they ended"));
  };
  // Each replica's metrics count its own agents: summed over replicas, each agent counts once.
  const metrics = new ControllerMetrics({ fleet: () => status.localStatus(), streams: () => server.streamGauges() });
  const debouncer = new Debouncer(config.debounce.quietMs, config.debounce.maxMs, () => server.desiredChanged());
  rollouts = new RolloutCoordinator({
    config: config.rollout,
    store: leadership !== null ? persistenceIn(leadership) : config.stateDir === undefined ? null : new RolloutStore(config.stateDir, stagedBackendsSchema, logger, clock),
    ...(leadership === null ? {} : { leadership: { leading: () => leadership.leading(), leader: () => leaderName(leadership.view().leader) } }),
    agent: (agent) => status.agent(agent),
    fleet: () => server.connected().flatMap((stream) => (stream.session === null ? [] : [{ id: stream.session.agentId, labels: stream.session.hello.labels, backends: store.backendsFor(stream.session.hello.labels).map((backend) => backend.name) }])),
    frozen: () => server.frozen !== null,
    cordoned: (agent) => cordons.reason(agent),
    failing: (agent, backends) => server.failingOn(agent, backends),
    ended: ({ target, reason }) => {
      status.changes.rolledBack(target, reason);
      rememberChanges();
    },
    changed: () => debouncer.trigger(),
    settleMs: config.agents.deadAfterMs,
    ...(options.rolloutTickMs === undefined ? {} : { tickMs: options.rolloutTickMs }),
    logger,
    clock,
  });
  await rollouts.load();
  const stopFollowing = leadership === null ? null : followLeadership(leadership, rollouts);
  leadership?.start();
  const frozen = config.stateDir === undefined ? null : await loadFreeze(config.stateDir);
  if (frozen !== null) server.freeze(frozen.reason, frozen.since);
  if (leadership !== null) {
    share = new FleetShare({
      consul: leadership,
      prefix: config.leadership!.fleetPrefix ?? config.leadership!.key,
      replica: config.leadership!.replica,
      agents: () => status.report(),
      freezeChanged: (freeze) => void followFreeze(freeze),
      storedFreeze: () => server.frozen,
      logger,
      clock: { now: clock, sleep: systemClock.sleep },
    });
    share.start();
  }
  const source = options.source ?? sourceFor(config, logger, {
    discoveryAnswered: (key, seconds, blocking) => {
      discoveryHealth.answered(key, clock());
      metrics.discoveryAnswered(key, seconds, blocking);
    },
    discoveryFailed: (key) => metrics.discoveryFailed(key),
  });
  // Consul's watch counts its own failures in the metrics; other sources are counted here.
  const sourceCountsErrors = source instanceof ConsulSource;
  const mappings = new Map(config.backends.map((mapping) => [mapping.backend as string, mapping]));
  const ranBefore = config.stateDir === undefined ? new Map<string, RanBefore>() : await loadRanBefore(config.stateDir, logger);
  let saving: Promise<void> = Promise.resolve();
  const rememberDesired = (): void => {
    const stateDir = config.stateDir;
    if (stateDir === undefined) return;
    const entries = store.all().map((state) => ({ mapping: mappings.get(state.name)!, state }));
    saving = saving.then(() => saveRanBefore(stateDir, entries)).catch((error: unknown) => logger.error({ err: error, stateDir }, "cannot store the desired states: config changes across a restart would not be staged"));
  };

  const rechecks = new Map<string, NodeJS.Timeout>();
  const readyIn = store.readyInMs();
  const readyTimer =
    readyIn === null
      ? null
      : setTimeout(() => {
          const pending = store.pending();
          if (pending.length > 0) logger.warn({ backends: pending, waitedMs: readyWaitMs }, "discovery has not answered for these backends: pushing the others; agents keep what they run of these until they answer");
          server.desiredChanged();
        }, readyIn);
  const stops = store.watches().map(({ service, tag, scope }) =>
    source.watch(service, tag, {
      answered: (key) => discoveryHealth.answered(key, clock()),
      snapshot: (snapshot) => {
        discoveryHealth.answered(snapshot.key, clock());
        for (const dropped of snapshot.dropped) logger.warn({ service, instance: dropped.id, reason: dropped.reason }, "instance dropped");
        const before = new Map<string, DesiredBackendState>(store.all().map((state) => [state.name, state]));
        const { changed, held } = store.apply(snapshot);
        for (const { backend, reason } of held) {
          logger.warn({ service, backend, reason }, "discovery answer held: the last good set stands");
          metrics.guardHeld(backend);
        }
        // A held answer is read again until one is taken: discovery may not change again.
        if (held.length > 0 && !rechecks.has(snapshot.key)) {
          rechecks.set(snapshot.key, setInterval(() => source.refresh(service, tag, scope), config.guards.recheckMs));
        } else if (held.length === 0) {
          clearInterval(rechecks.get(snapshot.key));
          rechecks.delete(snapshot.key);
        }
        if (changed.length === 0) return;
        logger.info({ service, backends: changed }, "desired state changed");
        const after = new Map(store.all().map((state) => [state.name as string, state]));
        const toStage = changed.flatMap((backend) => {
          const reason = stageReason(backend, before.get(backend), after.get(backend)!);
          return reason === null ? [] : [{ backend, reason }];
        });
        if (toStage.length > 0) {
          const reason = [...new Set(toStage.map((entry) => entry.reason))].join("; ");
          rollouts!.staged(toStage.map(({ backend }) => ({ before: before.get(backend) ?? ranBefore.get(backend)!.state, after: after.get(backend)! })), reason);
        }
        for (const backend of changed) ranBefore.delete(backend);
        rememberDesired();
        status.changed(changed);
        rememberChanges();
        debouncer.trigger();
      },
      error: (key, error) => {
        discoveryHealth.failed(key, error.message, clock());
        if (!sourceCountsErrors) metrics.discoveryFailed(key);
        logger.warn({ service: key, err: error.message }, "discovery failed; the last good state stands, retrying");
      },
    }, scope),
  );
  /**
   * Why a changed backend goes out in waves, or null for at once. The first answer after a
   * start is compared with what the fleet ran before it: a changed mapping is the operator's
   * change; a changed server set, discovery's (staged only where the mapping says so).
   */
  function stageReason(backend: string, current: DesiredBackendState | undefined, next: DesiredBackendState): string | null {
    const mapping = mappings.get(backend)!;
    if (current !== undefined) return mapping.staged ? `discovery change of ${mapping.service}` : null;
    const ran = ranBefore.get(backend);
    if (ran === undefined || ran.state.version === next.version) return null;
    if (!sameMapping(ran.mapping, mappingKey(mapping))) return config.rollout.stageConfigChanges ? `config change of ${backend}` : null;
    return mapping.staged ? `discovery change of ${mapping.service}` : null;
  }

  server.events.on("acked", (agent, backend, version, latencyMs) => {
    const sinceChange = status.changes.acked(agent, backend, version, clock());
    metrics.acked(backend, sinceChange === null ? null : sinceChange / 1000, latencyMs === null ? null : latencyMs / 1000);
    if (sinceChange !== null) rememberChanges();
  });
  server.events.on("nacked", (agent, backend, version, error) => {
    status.changes.nacked(agent, backend, version, error);
    rememberChanges();
  });
  server.events.on("pushed", () => metrics.pushed());
  server.events.on("nacked", (_agent, backend) => metrics.nacked(backend));
  server.events.on("drift", (_agent, backend) => metrics.drift(backend));

  let api: RunningApiServer | null = null;
  const closeAll = async (): Promise<void> => {
    debouncer.cancel();
    if (readyTimer !== null) clearTimeout(readyTimer);
    rechecks.forEach((timer) => clearInterval(timer));
    stops.forEach((stop) => stop());
    await api?.close();
    await rollouts!.close();
    stopFollowing?.();
    // Before the session goes: the others drop this replica's agents at once.
    await share?.stop();
    // Released now rather than at the session's TTL: another replica leads after lock-delay.
    await leadership?.stop();
    await saving;
    await savingChanges;
    await source.close();
    await server.close();
  };
  try {
    const port = await server.listen(config.listen);
    logger.info({ listen: config.listen, port, watches: store.watches().length }, "controller listening");
    if (config.http.listen !== null) {
      api = await startApiServer({
        listen: config.http.listen,
        token: config.http.tokenFile === undefined ? null : await readToken(config.http.tokenFile, "http.tokenFile (--token-file)"),
        readToken: config.http.readTokenFile === undefined ? null : await readToken(config.http.readTokenFile, "http.readTokenFile"),
        audit: new AuditLog(config.stateDir, logger),
        openLoopbackReads: config.http.openLoopbackReads,
        logger,
        handlers: {
          status: (query) => status.status(query),
          freeze: async (reason) => {
            server.freeze(reason, clock());
            await persistFreeze();
            await shareFreeze();
          },
          unfreeze: async () => {
            server.unfreeze();
            await persistFreeze();
            await shareFreeze();
          },
          rollout: (action) => {
            const refused = rollouts!.act(action);
            if (refused !== null) throw new ActionRefused(refused);
          },
          forget: async (agent) => {
            const outcome = server.forget(agent);
            if (!outcome.forgotten) throw new ActionRefused(outcome.reason);
            status.changes.departed(agent, clock());
          },
          cordon: async (agent, reason) => {
            if (reason !== null && server.stream(agent) === undefined && server.departedAgent(agent) === undefined) {
              throw new ActionRefused(`no agent ${agent} is known to this controller: cordon one that is connected or remembered`);
            }
            const changed = await cordons.set(agent, reason, clock());
            if (!changed) throw new ActionRefused(`agent ${agent} is not cordoned`);
            logger.warn({ agent, reason }, reason === null ? "agent uncordoned" : "agent cordoned: kept out of rollouts");
          },
          metrics: () => metrics.render(),
          assets: STATUS_PAGE,
        },
      });
    }
    return { port, httpPort: api?.port ?? null, store, server, status, rollouts, leadership, close: closeAll };
  } catch (error) {
    await closeAll();
    throw error;
  }

  /** The fleet's freeze, as another replica wrote it: applied here, and stored for a restart. */
  async function followFreeze(freeze: SharedFreeze): Promise<void> {
    // Already frozen stays frozen as it was: an unfreeze between two freezes would push.
    if ((freeze === null) === (server.frozen === null)) return;
    if (freeze === null) server.unfreeze();
    else server.freeze(freeze.reason, freeze.since);
    await persistFreeze();
  }

  /** An operator's freeze or unfreeze, told to every replica; throws when Consul did not take it (this replica's stands). */
  async function shareFreeze(): Promise<void> {
    if (share === null) return;
    try {
      await share.shareFreeze(server.frozen);
    } catch (error) {
      throw new Error(`${server.frozen === null ? "unfrozen" : "frozen"} on this replica only: cannot tell the others through Consul (${(error as Error).message})`, { cause: error });
    }
  }

  async function persistFreeze(): Promise<void> {
    if (config.stateDir === undefined) return;
    try {
      await saveFreeze(config.stateDir, server.frozen);
    } catch (error) {
      logger.error({ err: error, stateDir: config.stateDir }, "cannot store the freeze: a restart would not keep it");
    }
  }
}

/** The token file's first line; a short one is refused rather than taken as a secret. */
async function readToken(path: string, setting: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new InvalidInputError(setting, [{ path: "", message: `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}` }]);
  }
  const token = (text.split("\n")[0] ?? "").trim();
  if (token.length < MIN_TOKEN_LENGTH) throw new InvalidInputError(setting, [{ path: "", message: `the first line of ${path} must be a token of at least ${MIN_TOKEN_LENGTH} characters (got ${token.length})` }]);
  return token;
}

function sourceFor(config: ControllerConfig, logger: Logger, observer: DiscoveryObserver): DiscoverySource {
  const { discovery } = config;
  if ("file" in discovery) return new FileSource(discovery.file, { logger });
  return new ConsulSource({ ...discovery.consul, leadership: config.leadership !== undefined, logger, observer });
}
