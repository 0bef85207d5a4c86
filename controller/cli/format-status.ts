import { SYNC_STATES, type AgentBackendStatus, type AgentStatus, type FleetStatus, type RolloutStatus } from "../status/status-schema.js";

/** `hafleet status` as text: a summary line, then backends, then agents (problems first). */

export function formatStatus(status: FleetStatus): string {
  const lines = [summaryLine(status)];
  if (status.frozen) lines.push(frozenLine(status.frozen));
  if (status.rollout) lines.push(rolloutLine(status.rollout));
  if (status.controller.rolloutLeader !== undefined) lines.push(`rollouts led by ${status.controller.rolloutLeader ?? "no replica now (none holds the lock)"}`);
  lines.push("", table(["BACKEND", "VERSION", "SERVERS", "IN SYNC", "NOT IN SYNC", "DISCOVERY"], status.backends.map((backend) => [
    backend.backend,
    backend.version,
    String(backend.servers),
    `${backend.inSync}/${backend.agents}`,
    countsText(backend.states, ["in-sync"]),
    backend.held === null ? "ok" : `held: ${backend.held}`,
  ])));
  const rows = status.agents.flatMap((agent) => agentRows(agent, status.generatedAt));
  lines.push("", rows.length === 0 ? "no agents" : table(["AGENT", "STATE", "BACKEND", "DESIRED", "APPLIED", "SERVING", "DETAIL"], rows));
  return lines.join("\n");
}

export function summaryLine(status: FleetStatus): string {
  const { summary } = status;
  const verdict = summary.inSync ? "all in sync" : "NOT in sync";
  return `${summary.agents} agent(s), ${summary.connected} connected, ${verdict}: ${countsText(summary.states, [])}`;
}

export function frozenLine(frozen: NonNullable<FleetStatus["frozen"]>): string {
  return `FROZEN since ${clock(frozen.since)}: ${frozen.reason} (no pushes until 'hafleet unfreeze')`;
}

export function rolloutLine(rollout: RolloutStatus): string {
  const halted = rollout.haltReason === null ? "" : `: ${rollout.haltReason}`;
  return `rollout ${rollout.id} (${rollout.reason}) ${rollout.phase}, wave ${Math.min(rollout.wave + 1, rollout.waves.length)}/${rollout.waves.length}${halted}`;
}

function agentRows(agent: AgentStatus, now: number): string[][] {
  if (agent.backends.length === 0) return [[agent.agent, agent.state, "-", "-", "-", "-", agentDetail(agent, now)]];
  return agent.backends.map((backend) => [agent.agent, backend.state, backend.backend, backend.desiredVersion || "-", backend.appliedVersion || "-", backend.serving === null ? "-" : String(backend.serving), backendDetail(agent, backend, now)]);
}

function agentDetail(agent: AgentStatus, now: number): string {
  return agent.disconnectedAt === null ? "" : `disconnected ${age(now - agent.disconnectedAt)} ago: ${agent.disconnectReason ?? "?"}`;
}

function backendDetail(agent: AgentStatus, backend: AgentBackendStatus, now: number): string {
  switch (backend.state) {
    case "disconnected":
      return agentDetail(agent, now);
    case "pending":
      return backend.pendingSince === null ? "sent" : `sent ${age(now - backend.pendingSince)} ago`;
    case "rejected":
      return `nack: ${backend.error ?? "?"}`;
    case "repairing":
      return `repairing: ${backend.error ?? "?"}`;
    case "unknown":
      return "acked; no report of what HAProxy runs yet";
    case "drifted":
    case "held":
      return backend.drift.map((entry) => `${entry.state} ${entry.endpoint}`).join(", ");
    case "not-sent":
      return agent.rolloutSide === "baseline" ? "waiting for its rollout wave" : "not sent yet";
    case "in-sync":
      return "";
  }
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
