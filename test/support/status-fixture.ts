import { createHash } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { STATUS_PAGE, STATUS_PAGE_HEADERS } from "../../controller/http/page/status-page.js";
import {
  SYNC_STATES,
  fleetStatusSchema,
  type AgentBackendStatus,
  type AgentStatus,
  type ChangeStatus,
  type FleetStatus,
  type RolloutStatus,
  type SyncState,
} from "../../controller/status/status-schema.js";

export interface FleetFixture {
  /** How many agents are in each state; every other agent is in sync. */
  states?: Partial<Record<SyncState, number>>;
  /** Agents in all, at least the sum of `states`. */
  agents?: number;
  backends?: string[];
  /** Per backend, why the guard holds it. */
  held?: Record<string, string>;
  frozen?: FleetStatus["frozen"];
  rollout?: RolloutStatus | null;
  changes?: ChangeStatus[];
  now?: number;
}

export const FIXTURE_NOW = Date.UTC(2026, 10, 24, 9, 30);
const REGIONS = ["eu-west-1", "eu-central-1", "us-east-1", "ap-south-1"];

/**
 * A valid fleet status whose agents are in the states asked for, worst first, then in sync.
 * A problem agent has its first backend in that state (a disconnected one, all of them), with
 * the details the state carries; the summary and the backends are counted from the agents.
 */
export function fleetStatusFixture(fixture: FleetFixture = {}): FleetStatus {
  const now = fixture.now ?? FIXTURE_NOW;
  const backendNames = fixture.backends ?? ["be_app", "be_api", "be_static"];
  const states = SYNC_STATES.flatMap((state) => Array<SyncState>(fixture.states?.[state] ?? 0).fill(state));
  while (states.length < (fixture.agents ?? states.length)) states.push("in-sync");
  const agents = states.map((state, index) => agentFixture(index, state, backendNames, now));
  const count = (of: readonly SyncState[]) => Object.fromEntries(SYNC_STATES.map((state) => [state, of.filter((entry) => entry === state).length])) as Record<SyncState, number>;
  return fleetStatusSchema.parse({
    generatedAt: now,
    controller: { version: "0.1.0", startedAt: now - 3 * 3_600_000 },
    summary: { agents: agents.length, connected: agents.filter((agent) => agent.connected).length, states: count(states), inSync: states.every((state) => state === "in-sync") },
    frozen: fixture.frozen ?? null,
    rollout: fixture.rollout ?? null,
    backends: backendNames.map((backend, index) => {
      const backendStates = agents.map((agent) => agent.backends.find((entry) => entry.backend === backend)!.state);
      const counts = count(backendStates);
      return { backend, version: versionOf(backend), servers: 4 + index * 3, inSync: counts["in-sync"], agents: agents.length, states: counts, held: fixture.held?.[backend] ?? null };
    }),
    agents,
    changes: fixture.changes ?? [
      { at: now - 40_000, backends: [{ backend: backendNames[0]!, version: versionOf(backendNames[0]!) }], agents: agents.length, acked: agents.length - states.filter((state) => state !== "in-sync").length, convergedMs: null },
      { at: now - 600_000, backends: backendNames.map((backend, position) => ({ backend, version: versionOf(position === 0 ? `${backend} before` : backend) })), agents: agents.length, acked: agents.length, convergedMs: 1_340 },
    ],
  });
}

/** A rollout of be_app in its second of three waves; `overrides` set its phase, halt reason... */
export function rolloutFixture(overrides: Partial<RolloutStatus> = {}): RolloutStatus {
  return {
    id: "rollout-0007",
    reason: "config change: be_app weights",
    backends: ["be_app"],
    phase: "applying",
    wave: 1,
    waves: [
      { agents: 4, acked: 4 },
      { agents: 12, acked: 9 },
      { agents: 24, acked: 0 },
    ],
    startedAt: FIXTURE_NOW - 180_000,
    phaseSince: FIXTURE_NOW - 30_000,
    haltReason: null,
    history: [
      { at: FIXTURE_NOW - 180_000, event: "wave 1 applying" },
      { at: FIXTURE_NOW - 120_000, event: "wave 1 baked" },
    ],
    baseline: [{ backend: "be_app", version: "0a1b2c3d4e5f6071" }],
    target: [{ backend: "be_app", version: "8192a3b4c5d6e7f8" }],
    ...overrides,
  };
}

export function agentId(index: number): string {
  return `lb-${REGIONS[index % REGIONS.length]}-${String(index).padStart(5, "0")}`;
}

function agentFixture(index: number, state: SyncState, backendNames: readonly string[], now: number): AgentStatus {
  const disconnected = state === "disconnected";
  return {
    agent: agentId(index),
    labels: { region: REGIONS[index % REGIONS.length]!, tier: index % 3 === 0 ? "edge" : "internal" },
    hafleetVersion: "0.1.0",
    state,
    problem: null,
    cordoned: null,
    lastSeenAt: null,
    connected: !disconnected,
    replica: null,
    peer: `10.20.${Math.floor(index / 250) % 256}.${index % 250}:40${String(index % 1000).padStart(3, "0")}`,
    connectedAt: now - 7_200_000,
    disconnectedAt: disconnected ? now - 95_000 : null,
    disconnectReason: disconnected ? "no heartbeat for 15s" : null,
    rolloutSide: null,
    backends: backendNames.map((backend, position) => backendFixture(backend, disconnected || position === 0 ? state : "in-sync", position === 0, index, now)),
  };
}

/** The first backend changed 40 s ago (see the changes): an agent that left before has the version before. */
function backendFixture(backend: string, state: SyncState, first: boolean, index: number, now: number): AgentBackendStatus {
  const desired = versionOf(backend);
  const before = versionOf(`${backend} before`);
  const entry: AgentBackendStatus = { backend, state, desiredVersion: desired, appliedVersion: desired, pendingSince: null, error: null, drift: [], serving: 4 };
  switch (state) {
    case "rejected":
      return { ...entry, appliedVersion: before, error: `set server ${backend}/srv3 addr 10.0.3.${index % 250}: No such server.` };
    case "drifted":
      return { ...entry, serving: 3, drift: [{ endpoint: `10.0.1.${index % 250}:8080`, state: "missing" }] };
    case "held":
      return { ...entry, serving: 3, drift: [{ endpoint: `10.0.2.${index % 250}:8080`, state: "held" }] };
    case "repairing":
      return { ...entry, error: "HAProxy reloaded or restarted (worker 1234 -> 1240)" };
    case "unknown":
      return { ...entry, serving: null };
    case "pending":
      return { ...entry, appliedVersion: before, pendingSince: now - 12_000 };
    case "not-sent":
      return { ...entry, appliedVersion: before };
    case "disconnected":
      return { ...entry, appliedVersion: first ? before : desired, serving: null };
    case "in-sync":
      return entry;
  }
}

/** A content digest, as the controller's versions are. */
function versionOf(backend: string): string {
  return createHash("sha256").update(backend).digest("hex").slice(0, 16);
}

export interface StatusPageServer {
  /** The page's URL, ending in "/". */
  url: string;
  close(): Promise<void>;
}

/**
 * The status page and its API, as the controller serves them, below `prefix` (as behind a
 * proxy). The status is asked of `statusProvider` on every request; when it throws, the API
 * answers 503.
 */
export async function serveStatusPage(statusProvider: () => FleetStatus, prefix = ""): Promise<StatusPageServer> {
  const server = createServer((request, response) => {
    const path = new URL(request.url ?? "/", "http://localhost").pathname;
    const local = path.startsWith(`${prefix}/`) ? path.slice(prefix.length) : null;
    if (local === "/api/v1/status") {
      let body: string;
      try {
        body = JSON.stringify(statusProvider());
      } catch (error) {
        response.writeHead(503, { "content-type": "text/plain" }).end(String(error));
        return;
      }
      response.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" }).end(body);
      return;
    }
    const asset = local === null ? undefined : STATUS_PAGE.get(local);
    if (asset === undefined) {
      response.writeHead(404, { "content-type": "text/plain" }).end("not found");
      return;
    }
    response.writeHead(200, { ...STATUS_PAGE_HEADERS, "content-type": asset.contentType }).end(asset.body);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}${prefix}/`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((error) => (error ? reject(error) : resolve()));
      }),
  };
}
