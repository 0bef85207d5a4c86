import type { AgentBackendStatus, AgentStatus, BackendStatus, FleetStatus, RolloutStatus } from "../status/status-schema.js";
import type { EndpointCondition } from "../status/endpoint-condition.js";
import { clock, printable } from "./format-status.js";

/*
 * `hafleet wait`'s verdict on one status, pure. A pipeline acts on exit 0, so done means
 * only what agents reported: at least one agent matches, and every matching agent is in sync
 * on the version the fleet heads to (a rollout's target included), or serves (lacks) the
 * endpoints asked for. What can never come true by waiting fails at once; what might still
 * come true waits, and the timeout names what it waited for.
 */

export type { EndpointCondition } from "../status/endpoint-condition.js";

export interface WaitTarget {
  version?: string;
  backend?: string;
  selector: Readonly<Record<string, string>>;
  /** Every matching agent assigned the backend serves it (on every HAProxy socket). */
  contains?: readonly EndpointCondition[];
  /** No matching agent assigned the backend serves it (on any socket). */
  lacks?: readonly EndpointCondition[];
  /** Disconnected matching agents are left out instead of waited for. */
  ignoreDisconnected?: boolean;
  /**
   * The rollout as it was when the wait began: one that rolls back or aborts after that fails
   * the wait; one already rolled back then is the fleet's current state, not news.
   */
  rolloutAtStart?: { id: string; phase: RolloutStatus["phase"] } | null;
}

export type WaitVerdict = { done: true; detail: string } | { done: false; failed: boolean; detail: string };

const SHOWN = 5;

export function judgeWait(status: FleetStatus, target: WaitTarget): WaitVerdict {
  const fail = (detail: string): WaitVerdict => ({ done: false, failed: true, detail });
  const wait = (detail: string): WaitVerdict => ({ done: false, failed: false, detail });
  const selectorText = Object.entries(target.selector).map(([key, value]) => `${key}=${value}`).join(",");
  const endpoints = [...(target.contains ?? []).map((condition) => ({ ...condition, want: "all" as const })), ...(target.lacks ?? []).map((condition) => ({ ...condition, want: "none" as const }))];
  const rows = new Map(status.backends.map((backend) => [backend.backend, backend]));
  for (const name of [...(target.backend === undefined ? [] : [target.backend]), ...endpoints.map((condition) => condition.backend)]) {
    if (!rows.has(name)) return fail(`no backend ${name}: the controller maps ${status.backends.map((backend) => backend.backend).join(", ") || "none"}`);
  }
  const matching = status.agents.filter((agent) => Object.entries(target.selector).every(([key, value]) => agent.labels[key] === value));
  if (matching.length === 0) {
    return fail(selectorText === "" ? "no agent is known to the controller: nothing to wait for" : `no agent matches --selector ${selectorText} (${status.agents.length} agent(s) known)`);
  }

  // Which backends, and at which version, this wait is about.
  let backends: BackendStatus[];
  if (endpoints.length > 0) backends = [...new Set(endpoints.map((condition) => condition.backend))].map((name) => rows.get(name)!);
  else backends = target.backend === undefined ? status.backends : [rows.get(target.backend)!];
  if (target.version !== undefined && endpoints.length === 0) {
    const withVersion = backends.filter((backend) => backend.version === target.version);
    if (withVersion.length === 0) return versionNotDesired(status, backends, target.version);
    backends = withVersion;
  }
  const names = new Set(backends.map((backend) => backend.backend));

  const rolloutFailure = failedRollout(status.rollout, names, target);
  if (rolloutFailure !== null) return fail(rolloutFailure);

  const considered = matching.filter((agent) => agent.connected || !target.ignoreDisconnected);
  const pairs = considered.flatMap((agent) => agent.backends.filter((backend) => names.has(backend.backend)).map((backend) => ({ agent, backend })));
  const undiscovered = backends.filter((backend) => backend.discovery.state !== "ok");
  if (pairs.length === 0 && undiscovered.length > 0) {
    // Nothing is pushed of a backend discovery never answered for: it may still come.
    return wait(undiscovered.map((backend) => `discovery of ${backend.backend} ${discoveryText(backend)}`).join("; "));
  }
  if (pairs.length === 0) {
    const which = [...names].join(", ") || "no backend";
    return fail(`no ${target.ignoreDisconnected ? "connected " : ""}agent${selectorText === "" ? "" : ` matching ${selectorText}`} is assigned ${which}: nothing to wait for`);
  }
  const rejected = pairs.find(({ backend }) => backend.state === "rejected");
  if (rejected) return fail(`${printable(rejected.agent.agent)} rejected ${rejected.backend.backend} ${rejected.backend.desiredVersion}: ${printable(rejected.backend.error ?? "?")}`);

  const blockers = [
    ...undiscovered.map((backend) => `discovery of ${backend.backend} ${discoveryText(backend)}`),
    // Two hosts behind one id: what "it" runs is whichever reported last, so it is not known.
    ...[...new Set(pairs.map((pair) => pair.agent))].filter((agent) => agent.problem !== null).map((agent) => `${printable(agent.agent)}: ${printable(agent.problem!)}`),
    ...(endpoints.length === 0 ? versionBlockers(pairs, rows, status.generatedAt) : endpointBlockers(pairs, endpoints, rows, status.generatedAt)),
  ];
  const away = matching.length - considered.length;
  const note = away > 0 ? ` (${away} disconnected agent(s) left out: --ignore-disconnected)` : "";
  if (blockers.length === 0) {
    const agents = new Set(pairs.map(({ agent }) => agent.agent)).size;
    if (endpoints.length > 0) {
      const said = endpoints.map((condition) => `${condition.want === "all" ? "serve" : "lack"} ${condition.backend}=${condition.endpoint}`).join(", ");
      return { done: true, detail: `all ${agents} matching agent(s) ${said}${note}` };
    }
    const versions = backends.map((backend) => `${backend.backend}=${backend.version}`).join(", ");
    return { done: true, detail: `all ${agents} matching agent(s) run the desired state: ${versions}${note}` };
  }
  const summary = `${blockers.length} not there yet: ${blockers.slice(0, SHOWN).join("; ")}${blockers.length > SHOWN ? "; ..." : ""}${note}`;
  if (status.frozen !== null) return fail(`the fleet is frozen since ${clock(status.frozen.since)} (${printable(status.frozen.reason)}): nothing is pushed until 'hafleet unfreeze'; ${summary}`);
  return wait(summary);
}

type Pair = { agent: AgentStatus; backend: AgentBackendStatus };
type Rows = ReadonlyMap<string, BackendStatus>;

/** Agents not in sync on the version their backend's row heads to. */
function versionBlockers(pairs: readonly Pair[], rows: Rows, now: number): string[] {
  return pairs
    .filter(({ backend }) => backend.state !== "in-sync" || backend.desiredVersion !== rows.get(backend.backend)!.version)
    .map(({ agent, backend }) => `${printable(agent.agent)} ${backend.backend} ${pairText(agent, backend, rows.get(backend.backend)!, now)}`);
}

/** Agents whose own report does not (yet) show each endpoint served everywhere (contains) or nowhere (lacks). */
function endpointBlockers(pairs: readonly Pair[], endpoints: ReadonlyArray<EndpointCondition & { want: "all" | "none" }>, rows: Rows, now: number): string[] {
  const blockers: string[] = [];
  for (const condition of endpoints) {
    for (const { agent, backend } of pairs) {
      if (backend.backend !== condition.backend) continue;
      const served = backend.endpoint?.find((entry) => entry.endpoint === condition.endpoint)?.served ?? null;
      if (served === condition.want) continue;
      const what = !agent.connected
        ? pairText(agent, backend, rows.get(backend.backend)!, now)
        : served === null
          ? `not known whether it serves ${condition.endpoint} (${backend.state})`
          : `serves ${condition.endpoint} on ${served === "some" ? "some of its HAProxy sockets" : served === "all" ? "its HAProxy" : "no HAProxy socket"}`;
      blockers.push(`${printable(agent.agent)} ${condition.backend} ${what}`);
    }
  }
  return blockers;
}

/** No backend of the wait has version V now: rolled back, superseded or failed fails; else it may come. */
function versionNotDesired(status: FleetStatus, backends: readonly BackendStatus[], version: string): WaitVerdict {
  const rollout = status.rollout;
  if (rollout !== null && (rollout.phase === "rolled-back" || rollout.phase === "aborted") && rollout.target.some((entry) => entry.version === version)) {
    return { done: false, failed: true, detail: `version ${version} was ${rollout.phase === "aborted" ? "aborted" : "rolled back"} by rollout ${rollout.id}${rollout.haltReason === null ? "" : `: ${printable(rollout.haltReason)}`}; agents are back on ${versionsText(rollout.baseline)}` };
  }
  const change = status.changes.find((entry) => entry.backends.some((backend) => backend.version === version) && ["rolled-back", "superseded", "failed"].includes(entry.outcome));
  if (change !== undefined) {
    return { done: false, failed: true, detail: `version ${version} ${change.outcome === "rolled-back" ? "was rolled back" : change.outcome === "superseded" ? "was superseded" : "failed"}: ${printable(change.outcomeDetail ?? "?")}; now: ${backendsText(backends)}` };
  }
  return { done: false, failed: false, detail: `no backend's desired version is ${version} yet (now: ${backendsText(backends)})` };
}

function failedRollout(rollout: RolloutStatus | null, names: ReadonlySet<string>, target: WaitTarget): string | null {
  if (rollout === null || !rollout.backends.some((backend) => names.has(backend))) return null;
  const reason = rollout.haltReason === null ? "" : `: ${printable(rollout.haltReason)}`;
  if (rollout.phase === "halted") return `rollout ${rollout.id} of ${rollout.backends.join(", ")} halted${reason}; 'hafleet rollout resume' or 'rollback'`;
  if (rollout.phase !== "rolled-back" && rollout.phase !== "aborted") return null;
  const start = target.rolloutAtStart;
  const newsToThisWait = start === undefined || start === null || start.id !== rollout.id || (start.phase !== "rolled-back" && start.phase !== "aborted");
  if (!newsToThisWait) return null;
  return `rollout ${rollout.id} of ${rollout.backends.join(", ")} ${rollout.phase === "aborted" ? "was aborted" : "rolled back"}${reason}; agents are back on ${versionsText(rollout.baseline)}`;
}

function pairText(agent: AgentStatus, backend: AgentBackendStatus, row: BackendStatus, now: number): string {
  if (!agent.connected) return `disconnected${agent.disconnectedAt === null ? "" : ` ${Math.round((now - agent.disconnectedAt) / 1000)}s ago`}: ${printable(agent.disconnectReason ?? "?")}`;
  if (backend.desiredVersion !== row.version) return `on ${backend.desiredVersion || "nothing"} until its rollout wave (the fleet heads to ${row.version})`;
  return backend.state === "not-sent" && agent.rolloutSide === null ? "not sent yet" : backend.state;
}

function discoveryText(backend: BackendStatus): string {
  const { state, since, error } = backend.discovery;
  if (state === "never-answered") return "has never answered";
  const when = since === null ? "" : ` since ${clock(since)}`;
  return `${state}${when}${error === null ? "" : `: ${printable(error)}`}`;
}

function versionsText(entries: ReadonlyArray<{ backend: string; version: string }>): string {
  return entries.map((entry) => `${entry.backend}=${entry.version}`).join(", ") || "what they ran before";
}

function backendsText(backends: readonly BackendStatus[]): string {
  return backends.map((backend) => `${backend.backend}=${backend.version || "-"}`).join(", ") || "none";
}
