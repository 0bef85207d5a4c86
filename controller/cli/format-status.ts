import { SYNC_STATES, type AgentBackendStatus, type AgentStatus, type BackendStatus, type FleetStatus, type RolloutStatus } from "../status/status-schema.js";

/**
 * `hafleet status` as text: a summary line, then backends, then agents (problems first): one
 * row per agent (view "agents"), or one per agent and backend (view "wide"). Without headers,
 * only the agent rows, for scripts.
 */
export interface FormatOptions {
  view?: "agents" | "wide";
  headers?: boolean;
}

export function formatStatus(status: FleetStatus, options: FormatOptions = {}): string {
  const view = options.view ?? "agents";
  const headers = options.headers ?? true;
  // Replicas sharing status: which one holds each agent, beside its id.
  const replicas = status.agents.some((agent) => agent.replica !== null);
  const withReplica = (agent: AgentStatus, row: string[]): string[] => (replicas ? [row[0]!, printable(agent.replica ?? "-"), ...row.slice(1)] : row);
  const rows =
    view === "wide"
      ? status.agents.flatMap((agent) => agentRows(agent, status).map((row) => withReplica(agent, row)))
      : status.agents.map((agent) => withReplica(agent, agentSummaryRow(agent, status)));
  const columns = view === "wide" ? ["AGENT", "STATE", "BACKEND", "DESIRED", "APPLIED", "SERVING", "DETAIL"] : ["AGENT", "STATE", "IN SYNC", "LAST SEEN", "VERSION", "LABELS", "DETAIL"];
  const header = replicas ? [columns[0]!, "REPLICA", ...columns.slice(1)] : columns;
  if (!headers) return table(header, rows).split("\n").slice(1).join("\n");
  const lines = [summaryLine(status)];
  if (status.frozen) lines.push(frozenLine(status.frozen));
  if (status.rollout) lines.push(rolloutLine(status.rollout));
  if (status.controller.rolloutLeader !== undefined) lines.push(`rollouts led by ${status.controller.rolloutLeader ?? "no replica now (none holds the lock)"}`);
  lines.push("", table(["BACKEND", "VERSION", "SERVERS", "IN SYNC", "NOT IN SYNC", "DISCOVERY"], status.backends.map((backend) => [
    backend.backend,
    backend.version || "-",
    String(backend.servers),
    `${backend.inSync}/${backend.agents}`,
    notInSyncText(backend),
    discoveryText(backend),
  ])));
  lines.push("", rows.length === 0 ? "no agents" : table(header, rows));
  return lines.join("\n");
}

/** One agent on one line: its worst state, backends in sync, when last seen, its labels, and its first problem. */
function agentSummaryRow(agent: AgentStatus, status: FleetStatus): string[] {
  const inSync = agent.backends.filter((backend) => backend.state === "in-sync").length;
  const last = agent.lastSeenAt ?? agent.disconnectedAt;
  const seen = last === null ? (agent.connected ? "connected" : "?") : `${age(status.generatedAt - last)} ago`;
  const labels = Object.entries(agent.labels).map(([key, value]) => `${key}=${value}`).join(",") || "-";
  const problems = agent.backends.filter((backend) => backend.state !== "in-sync" && backend.state !== "disconnected");
  const first = problems[0];
  const details = [
    ...(agent.problem === null ? [] : [`PROBLEM: ${printable(agent.problem)}`]),
    ...(agent.cordoned === null ? [] : [`cordoned: ${printable(agent.cordoned)}`]),
    ...(agent.connected ? [] : [agentDetail(agent, status.generatedAt)]),
    ...(first === undefined ? [] : [`${first.backend}: ${backendDetail(agent, first, status) || first.state}${problems.length > 1 ? ` (+${problems.length - 1} more backends)` : ""}`]),
  ];
  return [printable(agent.agent), agent.state, `${inSync}/${agent.backends.length}`, seen, printable(agent.hafleetVersion), printable(labels), details.join("; ")];
}

/**
 * One line on the whole: "all in sync" only when every agent is in sync, discovery is ok for
 * every backend and no agent id is in conflict; otherwise it says which is not.
 */
export function summaryLine(status: FleetStatus): string {
  const { summary } = status;
  const problems = [
    ...(summary.inSync ? [] : ["NOT in sync"]),
    ...(summary.discoveryProblems > 0 ? [`discovery NOT ok for ${summary.discoveryProblems} backend(s)`] : []),
    ...(summary.agentProblems > 0 ? [`${summary.agentProblems} agent(s) with a problem of their own`] : []),
  ];
  const verdict = problems.length === 0 ? "all in sync" : problems.join(", ");
  return `${summary.agents} agent(s) (${summary.scope}), ${summary.connected} connected, ${verdict}: ${countsText(summary.states, [])}`;
}

export function frozenLine(frozen: NonNullable<FleetStatus["frozen"]>): string {
  return `FROZEN since ${clock(frozen.since)}: ${printable(frozen.reason)} (no pushes until 'hafleet unfreeze')`;
}

export function rolloutLine(rollout: RolloutStatus): string {
  const halted = rollout.haltReason === null ? "" : `: ${printable(rollout.haltReason)}`;
  return `rollout ${rollout.id} (${printable(rollout.reason)}) ${rollout.phase}, wave ${Math.min(rollout.wave + 1, rollout.waves.length)}/${rollout.waves.length}${halted}`;
}

export function discoveryText(backend: BackendStatus): string {
  const { state, since, error } = backend.discovery;
  if (state === "ok") return "ok";
  if (state === "never-answered") return "never answered";
  const when = since === null ? "" : ` since ${clock(since)}`;
  return `${state}${when}: ${printable(error ?? "?")}`;
}

function notInSyncText(backend: BackendStatus): string {
  const counts = countsText(backend.states, ["in-sync"]);
  if (backend.behind === 0) return counts;
  const behind = `${backend.behind} on another version (rollout)`;
  return counts === "-" ? behind : `${counts}, ${behind}`;
}

function agentRows(agent: AgentStatus, status: FleetStatus): string[][] {
  const id = printable(agent.agent);
  const own = [...(agent.problem === null ? [] : [`PROBLEM: ${printable(agent.problem)}`]), ...(agent.cordoned === null ? [] : [`cordoned: ${printable(agent.cordoned)}`])];
  if (agent.backends.length === 0) return [[id, agent.state, "-", "-", "-", "-", [...own, agentDetail(agent, status.generatedAt)].filter(Boolean).join("; ")]];
  return agent.backends.map((backend, index) => [
    id,
    backend.state,
    backend.backend,
    backend.desiredVersion || "-",
    backend.appliedVersion || "-",
    backend.serving === null ? "-" : String(backend.serving),
    [...(index === 0 ? own : []), backendDetail(agent, backend, status)].filter(Boolean).join("; "),
  ]);
}

function agentDetail(agent: AgentStatus, now: number): string {
  return agent.disconnectedAt === null ? "" : `disconnected ${age(now - agent.disconnectedAt)} ago: ${printable(agent.disconnectReason ?? "?")}`;
}

function backendDetail(agent: AgentStatus, backend: AgentBackendStatus, status: FleetStatus): string {
  const now = status.generatedAt;
  switch (backend.state) {
    case "disconnected":
      return agentDetail(agent, now);
    case "pending":
      return backend.pendingSince === null ? "sent" : `sent ${age(now - backend.pendingSince)} ago`;
    case "rejected":
      return `nack: ${printable(backend.error ?? "?")}`;
    case "repairing":
      return `repairing: ${printable(backend.error ?? "?")}`;
    case "unknown":
      return "acked; no report of what HAProxy runs yet";
    case "drifted":
    case "held":
      return backend.drift.map((entry) => `${entry.state} ${printable(entry.endpoint)}`).join(", ");
    case "not-sent":
      return notSentDetail(agent, backend, status);
    case "in-sync":
      return "";
  }
}

/** Why nothing is on its way: a freeze first (it holds everything), then a rollout's later wave. */
function notSentDetail(agent: AgentStatus, backend: AgentBackendStatus, status: FleetStatus): string {
  if (status.frozen !== null) return `frozen: ${printable(status.frozen.reason)}`;
  const rollout = status.rollout;
  if (agent.rolloutSide === "baseline" && rollout !== null && rollout.backends.includes(backend.backend) && !["completed", "aborted", "rolled-back"].includes(rollout.phase)) {
    return `waiting for its rollout wave (rollout ${rollout.id} ${rollout.phase})`;
  }
  const row = status.backends.find((entry) => entry.backend === backend.backend);
  if (row !== undefined && row.discovery.state === "never-answered") return "not sent: discovery has not answered for every backend yet";
  return "not sent yet";
}

/**
 * Text from outside (agent ids, errors, operators' reasons) as one safe line: control
 * characters (a terminal's escape sequences, newlines) are shown escaped, never sent raw.
 */
export function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (char) => `\\x${char.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

function countsText(counts: Readonly<Record<string, number>>, skip: readonly string[]): string {
  const parts = SYNC_STATES.filter((state) => !skip.includes(state) && (counts[state] ?? 0) > 0).map((state) => `${counts[state]} ${state}`);
  return parts.length === 0 ? (skip.length === 0 ? "no agents" : "-") : parts.join(", ");
}

/** Columns padded to their widest cell; the last one left ragged. */
export function table(header: readonly string[], rows: readonly string[][]): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? "").length)));
  const line = (cells: readonly string[]): string => cells.map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column]!))).join("  ").trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

export function age(ms: number): string {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  return `${Math.round(seconds / 3600)}h`;
}

export function clock(epochMs: number): string {
  return new Date(epochMs).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}
