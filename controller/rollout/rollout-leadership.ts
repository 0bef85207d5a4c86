import type { Logger } from "pino";
import type { ConsulDiscovery, ControllerConfig } from "../config/controller-config.js";
import { ConsulLeadership } from "../leadership/consul-leadership.js";
import { leadershipConnection } from "../leadership/leadership-connection.js";
import type { Replica } from "../leadership/leader-value.js";
import { rolloutStateSchema } from "./rollout-state.js";
import { stagedBackendsSchema, type Rollout, type RolloutCoordinator, type RolloutPersistence } from "./rollout-coordinator.js";

/*
 * Several replicas, one rollout: the replica holding the Consul lock plans and judges waves and
 * publishes each move in the lock's own key; the others serve what it published. The key's
 * value is the persistence, so a new leader carries on where the last one stopped.
 */

export type RolloutLeadership = ConsulLeadership<Rollout>;

export function rolloutLeadership(settings: NonNullable<ControllerConfig["leadership"]>, consul: ConsulDiscovery, logger: Logger): RolloutLeadership {
  return new ConsulLeadership({
    // The same way to Consul as discovery: address, credentials, datacenter, namespace, partition.
    ...leadershipConnection(consul, settings),
    key: settings.key,
    sessionTtlMs: settings.sessionTtlMs,
    lockDelayMs: settings.lockDelayMs,
    replica: { id: settings.replica, ...(settings.url === undefined ? {} : { url: settings.url }) },
    data: rolloutStateSchema(stagedBackendsSchema),
    logger,
  });
}

/** The rollout kept in the lock's key: only the leader writes it; it is read through the leadership's view. */
export function persistenceIn(leadership: RolloutLeadership): RolloutPersistence {
  return { load: async () => null, save: (state) => leadership.publish(state) };
}

/** lead() when this replica takes the lock, follow() on every rollout the leader publishes. */
export function followLeadership(leadership: RolloutLeadership, coordinator: RolloutCoordinator): () => void {
  let led = false;
  return leadership.onChange((view) => {
    if (view.leading && !led) coordinator.lead(view.data);
    else if (!view.leading) coordinator.follow(view.data);
    led = view.leading;
  });
}

/** How a refused action names the leader: its id, and where to reach it when it said. */
export function leaderName(leader: Replica | null): string | null {
  if (leader === null) return null;
  return leader.url === undefined ? leader.id : `${leader.id} at ${leader.url}`;
}
