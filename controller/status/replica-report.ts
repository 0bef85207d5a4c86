import { z } from "zod";
import { InvalidInputError } from "../../agent/errors.js";
import { issuesOf } from "../../agent/model/validate.js";
import { syncStateSchema, type AgentStatus } from "./status-schema.js";

/*
 * What one replica tells the others of its agents (in Consul KV, under the fleet prefix): each
 * connected agent in compact form, enough for the others' status and `wait`. Pure: built from
 * this replica's status, encoded within Consul's value size limit; read as untrusted input.
 */

/** Consul's default `kv_max_value_size` (512 KiB); a report is kept below it, envelope included. */
export const CONSUL_MAX_VALUE_BYTES = 512 * 1024;

/** Past this many endpoints not run as desired, a backend's are not reported: whether it serves one is then not known elsewhere. */
const MAX_EXCEPTIONS = 64;

/** A backend's first problem is cut to this many characters: the agent's own host has the rest. */
const PROBLEM_CHARS = 160;

const reportedBackendSchema = z.strictObject({
  backend: z.string(),
  state: syncStateSchema,
  desired: z.string(),
  applied: z.string(),
  serving: z.number().int().min(0).nullable(),
  /** The agent's error, or the first server HAProxy runs differently; null: none. */
  problem: z.string().nullable(),
  /**
   * For `wait --contains/--lacks` on another replica: the endpoints HAProxy does not run as
   * `desired` says, and where each is served; every other endpoint is served everywhere when
   * desired, nowhere when not. null: not known (not acked, not reported, repairing, too many).
   */
  exceptions: z.array(z.strictObject({ endpoint: z.string(), served: z.enum(["all", "some", "none"]) })).max(MAX_EXCEPTIONS).nullable().default(null),
});

const reportedAgentSchema = z.strictObject({
  agent: z.string().min(1),
  labels: z.record(z.string(), z.string()),
  hafleetVersion: z.string(),
  state: syncStateSchema,
  problem: z.string().nullable(),
  rolloutSide: z.enum(["baseline", "target"]).nullable(),
  connectedAt: z.number(),
  lastSeenAt: z.number().nullable(),
  backends: z.array(reportedBackendSchema),
});
export type ReportedAgent = z.infer<typeof reportedAgentSchema>;

export const replicaReportSchema = z.strictObject({
  replica: z.string().min(1),
  publishedAt: z.number(),
  /** The replica's connected agents; `agents` lists fewer when the report had to be cut. */
  connected: z.number().int().min(0),
  truncated: z.boolean(),
  agents: z.array(reportedAgentSchema),
});
export type ReplicaReport = z.infer<typeof replicaReportSchema>;

/** Per agent and backend, what endpointExceptions() said (absent: not known). */
export type ExceptionsOf = (agent: string, backend: string) => ReadonlyArray<{ endpoint: string; served: "all" | "some" | "none" }> | null;

/** One connected agent's status, compact. */
export function reportedAgent(agent: AgentStatus, exceptionsOf: ExceptionsOf = () => null): ReportedAgent {
  return {
    agent: agent.agent,
    labels: agent.labels,
    hafleetVersion: agent.hafleetVersion,
    state: agent.state,
    problem: agent.problem,
    rolloutSide: agent.rolloutSide,
    connectedAt: agent.connectedAt,
    lastSeenAt: agent.lastSeenAt,
    backends: agent.backends.map((backend) => ({
      backend: backend.backend,
      state: backend.state,
      desired: backend.desiredVersion,
      applied: backend.appliedVersion,
      serving: backend.serving,
      problem: firstProblem(backend),
      exceptions: reportedExceptions(exceptionsOf(agent.agent, backend.backend)),
    })),
  };
}

function reportedExceptions(exceptions: ReturnType<ExceptionsOf>): ReportedAgent["backends"][number]["exceptions"] {
  return exceptions === null || exceptions.length > MAX_EXCEPTIONS ? null : exceptions.map((entry) => ({ ...entry }));
}

function firstProblem(backend: AgentStatus["backends"][number]): string | null {
  const [first, ...more] = backend.drift;
  const text = backend.error ?? (first === undefined ? null : `${first.state} ${first.endpoint}${more.length === 0 ? "" : ` (and ${more.length} more)`}`);
  return text === null || text.length <= PROBLEM_CHARS ? text : `${text.slice(0, PROBLEM_CHARS - 1)}…`;
}

export interface EncodedReport {
  value: string;
  report: ReplicaReport;
}

/**
 * The report of `agents` (this replica's status rows, worst first), as the value to write.
 * Each agent's size is measured: when they do not all fit in `maxBytes`, the worst come first
 * and the report says it was cut (`truncated`, `connected` against `agents.length`).
 */
export function encodeReport(replica: string, agents: readonly AgentStatus[], now: number, options: { maxBytes?: number; exceptions?: ExceptionsOf } = {}): EncodedReport {
  const maxBytes = options.maxBytes ?? CONSUL_MAX_VALUE_BYTES;
  const connected = agents.filter((agent) => agent.connected);
  const whole: ReplicaReport = { replica, publishedAt: now, connected: connected.length, truncated: false, agents: connected.map((agent) => reportedAgent(agent, options.exceptions)) };
  const value = JSON.stringify(whole);
  if (Buffer.byteLength(value) <= maxBytes) return { value, report: whole };
  // The envelope with no agents, as truncated, then agents while they fit ("," between them).
  const empty: ReplicaReport = { ...whole, truncated: true, agents: [] };
  let size = Buffer.byteLength(JSON.stringify(empty));
  const kept: ReportedAgent[] = [];
  for (const agent of whole.agents) {
    const more = Buffer.byteLength(JSON.stringify(agent)) + (kept.length === 0 ? 0 : 1);
    if (size + more > maxBytes) break;
    size += more;
    kept.push(agent);
  }
  const report = { ...empty, agents: kept };
  return { value: JSON.stringify(report), report };
}

/** What makes a report worth writing again: everything but the times that move on their own. */
export function reportFingerprint(report: ReplicaReport): string {
  return JSON.stringify({ ...report, publishedAt: 0, agents: report.agents.map((agent) => ({ ...agent, lastSeenAt: 0 })) });
}

/** A report read back from Consul, or why it is unusable. */
export function readReport(text: string, key: string): { report: ReplicaReport } | { problem: string } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    return { problem: `value of Consul key '${key}': not valid JSON (${(error as Error).message})` };
  }
  const checked = replicaReportSchema.safeParse(parsed);
  if (!checked.success) return { problem: new InvalidInputError(`value of Consul key '${key}'`, issuesOf(checked.error, parsed)).message };
  return { report: checked.data };
}
