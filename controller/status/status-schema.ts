import { z } from "zod";

/*
 * The controller's status API (GET /api/v1/status), as the CLI, the page and scripts read it.
 * One schema for the producer and every consumer: the CLI validates what it receives with it.
 * Times are epoch milliseconds; ages are computed by the reader from `generatedAt`.
 */

/**
 * Per agent and backend, worst first (an agent's state is the worst of its backends):
 * - disconnected: the agent's stream is gone; its last known versions are shown;
 * - rejected: the agent nacked the desired version (error given); held until it changes;
 * - drifted: acked, but HAProxy now runs something else (differences given), or serves none of
 *   the backend's servers;
 * - repairing: the agent saw its HAProxy replaced (a reload, a restart) and is re-applying;
 *   what the new process runs is not known yet (the agent's reason given);
 * - unknown: acked, but the agent has not reported what HAProxy runs;
 * - held: an operator drained or put in maintenance servers hafleet would run;
 * - pending: sent, not answered yet (age given);
 * - not-sent: the agent lacks it and nothing is in flight (a rollout's later wave, a freeze);
 * - in-sync: acked, and HAProxy runs it.
 */
export const SYNC_STATES = ["disconnected", "rejected", "drifted", "repairing", "unknown", "held", "pending", "not-sent", "in-sync"] as const;
export const syncStateSchema = z.enum(SYNC_STATES);
export type SyncState = z.infer<typeof syncStateSchema>;

const countsSchema = z.record(syncStateSchema, z.number().int().min(0));

export const serverDriftSchema = z.object({ endpoint: z.string(), state: z.enum(["missing", "unexpected", "held"]) });

export const agentBackendStatusSchema = z.object({
  backend: z.string(),
  state: syncStateSchema,
  /** The version this agent should run now ("" when the backend is no longer assigned). */
  desiredVersion: z.string(),
  /** The version the agent last acked ("" none). */
  appliedVersion: z.string(),
  /** pending: when the push went out. */
  pendingSince: z.number().nullable(),
  /** rejected: the agent's error; repairing: what the agent is repairing. */
  error: z.string().nullable(),
  /** drifted / held: what HAProxy runs differently, per endpoint. */
  drift: z.array(serverDriftSchema),
  /** Servers ready in HAProxy, summed over the agent's sockets (null: not reported yet). */
  serving: z.number().int().min(0).nullable(),
  /**
   * Asked for with ?endpoint=: whether HAProxy serves it, on every socket, some or none, from
   * the agent's own report; null when that is not known (not acked, no report, repairing).
   */
  endpoint: z.array(z.object({ endpoint: z.string(), served: z.enum(["all", "some", "none"]).nullable() })).optional(),
});
export type AgentBackendStatus = z.infer<typeof agentBackendStatusSchema>;

export const agentStatusSchema = z.object({
  agent: z.string(),
  labels: z.record(z.string(), z.string()),
  hafleetVersion: z.string(),
  state: syncStateSchema,
  connected: z.boolean(),
  /** The stream's peer address while connected, else the last one ("" when another replica holds it). */
  peer: z.string(),
  /** With several replicas (leadership on Consul): the replica whose stream holds it; null: no replicas share status. */
  replica: z.string().nullable().default(null),
  /**
   * Something wrong with the agent itself rather than a backend: two hosts using its id (each
   * new stream replaces the other's). null: nothing.
   */
  problem: z.string().nullable().default(null),
  /** An operator keeps it out of rollouts ('hafleet cordon'): the reason given, else null. */
  cordoned: z.string().nullable().default(null),
  connectedAt: z.number(),
  /** When the agent was last heard from (any message; heartbeats every agents.heartbeatMs); null: not known. */
  lastSeenAt: z.number().nullable().default(null),
  disconnectedAt: z.number().nullable(),
  disconnectReason: z.string().nullable(),
  /** The rollout side this agent is on, when a rollout runs. */
  rolloutSide: z.enum(["baseline", "target"]).nullable(),
  backends: z.array(agentBackendStatusSchema),
});
export type AgentStatus = z.infer<typeof agentStatusSchema>;

/**
 * What discovery said of a backend last: ok; failing (since when, the error: the last good set
 * stands); held (an answer the guard refused); never-answered (nothing is known of it yet, so
 * nothing of it is pushed).
 */
export const DISCOVERY_STATES = ["never-answered", "failing", "held", "ok"] as const;
export const discoveryHealthSchema = z.object({
  state: z.enum(DISCOVERY_STATES),
  /** failing: since the first failure in a row; held: since the guard held; ok: since the last answer. */
  since: z.number().nullable(),
  error: z.string().nullable(),
});
export type DiscoveryHealth = z.infer<typeof discoveryHealthSchema>;

export const backendStatusSchema = z.object({
  backend: z.string(),
  /**
   * The version agents should run now, fleet-wide: the target's during a rollout of this
   * backend (the fleet is on its way there), the baseline's after a rollback or an abort;
   * "" while discovery has never answered for it.
   */
  version: z.string(),
  servers: z.number().int().min(0),
  /** Agents assigned this backend in sync on `version`: "612/640 in sync". */
  inSync: z.number().int().min(0),
  agents: z.number().int().min(0),
  /** Of those, agents told to run another version for now: a rollout's later waves. */
  behind: z.number().int().min(0).default(0),
  states: countsSchema,
  /** Why discovery's last answer was not taken (the last good set stands), or null. */
  held: z.string().nullable(),
  discovery: discoveryHealthSchema.default({ state: "ok", since: null, error: null }),
});
export type BackendStatus = z.infer<typeof backendStatusSchema>;

/**
 * How a change ended: converging (not yet); converged (every agent it was for acked it);
 * rolled-back (its rollout halted and went back, or an operator rolled it back); superseded
 * (a newer change of its backends came first); failed (an agent rejected it); unknown (the
 * controller restarted before it ended: what happened since is not known).
 */
export const CHANGE_OUTCOMES = ["converging", "converged", "rolled-back", "superseded", "failed", "unknown"] as const;

export const changeStatusSchema = z.object({
  at: z.number(),
  outcome: z.enum(CHANGE_OUTCOMES).default("converging"),
  /** Why it ended so (the rollout's reason, the agent's error, the newer change), or null. */
  outcomeDetail: z.string().nullable().default(null),
  backends: z.array(z.object({ backend: z.string(), version: z.string() })),
  /** Agents that were to receive the change, and how many have acked it. */
  agents: z.number().int().min(0),
  acked: z.number().int().min(0),
  /** From the change to the last ack, once every agent acked; null until then. */
  convergedMs: z.number().nullable(),
});
export type ChangeStatus = z.infer<typeof changeStatusSchema>;

export const ROLLOUT_PHASES = ["applying", "baking", "paused", "halted", "completed", "aborted", "rolled-back"] as const;
export const rolloutPhaseSchema = z.enum(ROLLOUT_PHASES);

export const rolloutStatusSchema = z.object({
  id: z.string(),
  /** What started it: a config change, or a staged discovery change of a service. */
  reason: z.string(),
  backends: z.array(z.string()),
  phase: rolloutPhaseSchema,
  /** 0-based; waves[wave] is the one being applied or baked. */
  wave: z.number().int().min(0),
  waves: z.array(z.object({ agents: z.number().int().min(0), acked: z.number().int().min(0) })),
  startedAt: z.number(),
  phaseSince: z.number(),
  haltReason: z.string().nullable(),
  history: z.array(z.object({ at: z.number(), event: z.string() })),
  /** The versions the rollout moves between, per backend: agents in its waves get the target. */
  baseline: z.array(z.object({ backend: z.string(), version: z.string(), servers: z.number().int().min(0).optional() })).default([]),
  target: z.array(z.object({ backend: z.string(), version: z.string(), servers: z.number().int().min(0).optional() })).default([]),
});
export type RolloutStatus = z.infer<typeof rolloutStatusSchema>;

export const fleetStatusSchema = z.object({
  generatedAt: z.number(),
  controller: z.object({
    version: z.string(),
    startedAt: z.number(),
    /** With several replicas (leadership configured): the replica leading rollouts, null while none does. */
    rolloutLeader: z.string().nullable().optional(),
  }),
  summary: z.object({
    agents: z.number().int().min(0),
    connected: z.number().int().min(0),
    states: countsSchema,
    /** Every known agent in sync on every backend. */
    inSync: z.boolean(),
    /** Backends whose discovery is not ok (failing, held, never answered). */
    discoveryProblems: z.number().int().min(0).default(0),
    /** Agents with a problem of their own (a duplicate id). */
    agentProblems: z.number().int().min(0).default(0),
    /**
     * What this status covers: "this replica's agents" (file discovery: each replica knows only
     * the agents connected to it), or "fleet (N replicas)" when replicas share their agents
     * through Consul, with what is missing from that view (a truncated or stale report).
     */
    scope: z.string().default("this replica's agents"),
  }),
  /** With ?agent= or ?backend=: how many matched before any other filter (0: nothing by that name). */
  matched: z.object({ agents: z.number().int().min(0), backends: z.number().int().min(0) }).optional(),
  /** The kill switch: while set, nothing is pushed anywhere. */
  frozen: z.object({ since: z.number(), reason: z.string() }).nullable(),
  rollout: rolloutStatusSchema.nullable(),
  backends: z.array(backendStatusSchema),
  agents: z.array(agentStatusSchema),
  changes: z.array(changeStatusSchema),
});
export type FleetStatus = z.infer<typeof fleetStatusSchema>;
