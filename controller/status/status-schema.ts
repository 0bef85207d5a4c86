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
});
export type AgentBackendStatus = z.infer<typeof agentBackendStatusSchema>;

export const agentStatusSchema = z.object({
  agent: z.string(),
  labels: z.record(z.string(), z.string()),
  hafleetVersion: z.string(),
  state: syncStateSchema,
  connected: z.boolean(),
  /** The stream's peer address while connected, else the last one. */
  peer: z.string(),
  connectedAt: z.number(),
  disconnectedAt: z.number().nullable(),
  disconnectReason: z.string().nullable(),
  /** The rollout side this agent is on, when a rollout runs. */
  rolloutSide: z.enum(["baseline", "target"]).nullable(),
  backends: z.array(agentBackendStatusSchema),
});
export type AgentStatus = z.infer<typeof agentStatusSchema>;

export const backendStatusSchema = z.object({
  backend: z.string(),
  /** The fleet-wide desired version (the target's, during a rollout of this backend). */
  version: z.string(),
  servers: z.number().int().min(0),
  /** Agents assigned this backend that run the desired version: "612/640 in sync". */
  inSync: z.number().int().min(0),
  agents: z.number().int().min(0),
  states: countsSchema,
  /** Why discovery's last answer was not taken (the last good set stands), or null. */
  held: z.string().nullable(),
});
export type BackendStatus = z.infer<typeof backendStatusSchema>;

export const changeStatusSchema = z.object({
  at: z.number(),
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
  }),
  /** The kill switch: while set, nothing is pushed anywhere. */
  frozen: z.object({ since: z.number(), reason: z.string() }).nullable(),
  rollout: rolloutStatusSchema.nullable(),
  backends: z.array(backendStatusSchema),
  agents: z.array(agentStatusSchema),
  changes: z.array(changeStatusSchema),
});
export type FleetStatus = z.infer<typeof fleetStatusSchema>;
