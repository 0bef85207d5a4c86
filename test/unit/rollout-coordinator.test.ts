import { afterEach, describe, expect, it } from "vitest";
import { nameSchema } from "../../agent/model/values.js";
import { parseDesiredState } from "../../agent/model/desired-state.js";
import type { DesiredBackendState } from "../../controller/core/desired-store.js";
import { backendVersion } from "../../controller/core/versions.js";
import { rolloutConfigSchema } from "../../controller/rollout/rollout-config.js";
import { RolloutCoordinator, type Rollout } from "../../controller/rollout/rollout-coordinator.js";
import { silentLogger } from "../support/apply.js";

// The coordinator's leader and follower roles, with a clock and a leadership the test moves:
// which side of a rollout each agent's desired state comes from, and who may move it.

function backend(name: string, ...ports: number[]): DesiredBackendState {
  const servers = parseDesiredState({ backends: [{ name, servers: ports.map((port) => ({ address: "10.0.0.1", port })) }] }, "t").backends[0]!.servers;
  return { name: nameSchema.parse(name), servers, version: backendVersion(servers, false), allowEmpty: false, held: null, dropped: [] };
}

const AGENTS = ["a-1", "a-2", "a-3", "a-4"];
const OLD = backend("be_pay", 80, 81);
const NEW = backend("be_pay", 80, 81, 82);
const OTHER = backend("be_web", 90);
const coordinators: RolloutCoordinator[] = [];

afterEach(async () => {
  await Promise.all(coordinators.splice(0).map((coordinator) => coordinator.close()));
});

function coordinator(leading: { value: boolean }, now: { value: number }) {
  let changes = 0;
  const created = new RolloutCoordinator({
    config: rolloutConfigSchema.parse({ canary: { count: 1 }, waves: [1], bakeMs: 1_000 }),
    store: null,
    agent: () => undefined,
    fleet: () => AGENTS.map((id) => ({ id, labels: {}, backends: ["be_pay", "be_web"] })),
    frozen: () => false,
    changed: () => changes++,
    settleMs: 0,
    tickMs: 3_600_000,
    logger: silentLogger,
    clock: () => now.value,
    leadership: { leading: () => leading.value, leader: () => (leading.value ? "me" : "ctl-2 (http://127.0.0.1:7911)") },
  });
  coordinators.push(created);
  return { created, changes: () => changes };
}

/** Which version of be_pay each agent is given. */
function versions(coordinator: RolloutCoordinator): string[] {
  return AGENTS.map((agent) => coordinator.resolve(agent, [NEW, OTHER]).find((b) => b.name === "be_pay")!.version);
}

/** The rollout a leader starts for OLD -> NEW, as it would publish it. */
function leaderRollout(): Rollout {
  const leader = coordinator({ value: true }, { value: 1_000 }).created;
  leader.staged([{ before: OLD, after: NEW }], "discovery change of pay");
  const status = leader.status()!;
  expect(status.phase).toBe("applying");
  return (leader as unknown as { state: Rollout }).state;
}

describe("rollout leadership in the coordinator", () => {
  it("on the leader: a staged change goes to the canary only", () => {
    const { created } = coordinator({ value: true }, { value: 1_000 });
    created.staged([{ before: OLD, after: NEW }], "discovery change of pay");
    const given = versions(created);
    expect(given.filter((version) => version === NEW.version)).toHaveLength(1);
    expect(given.filter((version) => version === OLD.version)).toHaveLength(3);
  });

  it("on a follower: holds a staged change at what agents ran, for every agent, until the leader publishes it", () => {
    const { created } = coordinator({ value: false }, { value: 1_000 });
    created.staged([{ before: OLD, after: NEW }], "discovery change of pay");
    expect(versions(created)).toEqual(AGENTS.map(() => OLD.version));
    // Backends not staged are live.
    expect(created.resolve("a-1", [NEW, OTHER])[1]).toBe(OTHER);
    expect(created.status()).toBeNull();

    const published = leaderRollout();
    created.follow(published);
    expect(created.status()).toMatchObject({ id: published.id, phase: "applying" });
    const canary = published.waves[0]![0]!;
    expect(versions(created)).toEqual(AGENTS.map((agent) => (agent === canary ? NEW.version : OLD.version)));
  });

  it("on a follower: keeps the first baseline when discovery changes again before the leader publishes", () => {
    const { created } = coordinator({ value: false }, { value: 1_000 });
    created.staged([{ before: OLD, after: backend("be_pay", 80, 81, 83) }], "discovery change of pay");
    created.staged([{ before: backend("be_pay", 80, 81, 83), after: NEW }], "discovery change of pay");
    expect(versions(created)).toEqual(AGENTS.map(() => OLD.version));
    // A rollout of other content does not release it.
    created.follow({ ...leaderRollout(), target: [{ name: NEW.name, version: "0000000000000000", servers: [], allowEmpty: false }] });
    expect(versions(created).filter((version) => version === NEW.version)).toHaveLength(0);
  });

  it("on a follower: refuses operators' actions, naming the leader, and judges nothing", () => {
    const now = { value: 1_000 };
    const { created } = coordinator({ value: false }, now);
    created.follow(leaderRollout());
    expect(created.act("pause")).toBe("this replica follows: ask the leading one (ctl-2 (http://127.0.0.1:7911))");
    now.value += 60_000;
    (created as unknown as { tick(): void }).tick();
    expect(created.status()!.phase).toBe("applying");
  });

  it("taking the lead: carries on with the published rollout and rolls out what it held", () => {
    const leading = { value: false };
    const { created } = coordinator(leading, { value: 1_000 });
    created.staged([{ before: backend("be_web", 91), after: OTHER }], "config change of be_web");
    const published = leaderRollout();
    created.follow(published);
    leading.value = true;
    created.lead(published);
    // The held be_web change joins the rollout under way: one rollout of both, from a canary.
    const status = created.status()!;
    expect(status.backends.sort()).toEqual(["be_pay", "be_web"]);
    expect(created.act("pause")).toBeNull();
  });

  it("taking the lead with nothing published: the held change starts its rollout at its canary", () => {
    const leading = { value: false };
    const { created } = coordinator(leading, { value: 1_000 });
    created.staged([{ before: OLD, after: NEW }], "discovery change of pay");
    leading.value = true;
    created.lead(null);
    expect(created.status()).toMatchObject({ phase: "applying", backends: ["be_pay"] });
    expect(versions(created).filter((version) => version === NEW.version)).toHaveLength(1);
  });
});

describe("rollouts an operator steers", () => {
  function steered(options: { cordoned?: Record<string, string>; failing?: Record<string, string> } = {}) {
    const ended: Array<{ id: string; target: ReadonlyArray<{ backend: string; version: string }>; reason: string }> = [];
    const created = new RolloutCoordinator({
      config: rolloutConfigSchema.parse({ canary: { count: 1 }, waves: [1], bakeMs: 1_000 }),
      store: null,
      agent: () => undefined,
      fleet: () => AGENTS.map((id) => ({ id, labels: {}, backends: ["be_pay"] })),
      frozen: () => false,
      cordoned: (agent) => options.cordoned?.[agent] ?? null,
      failing: (agent, backends) => (backends.has("be_pay") ? (options.failing?.[agent] ?? null) : null),
      ended: (rollout) => ended.push(rollout),
      changed: () => undefined,
      settleMs: 0,
      tickMs: 3_600_000,
      logger: silentLogger,
      clock: () => 1_000,
    });
    coordinators.push(created);
    return { created, ended };
  }

  it("leaves cordoned agents and agents already failing out of the waves; they stay on the baseline until it completes", () => {
    const { created } = steered({ cordoned: { "a-2": "disk swap" }, failing: { "a-3": "rejecting be_pay (backend-missing)" } });
    created.staged([{ before: OLD, after: NEW }], "discovery change of pay");
    const status = created.status()!;
    expect(status.waves.map((wave) => wave.agents)).toEqual([1, 1]);
    expect(status.history[0]!.event).toMatch(/left out of the waves, on the baseline until it completes: a-2 \(cordoned: disk swap\), a-3 \(already rejecting be_pay \(backend-missing\)\)$/);
    expect(created.side("a-2")).toBe("baseline");
    expect(created.side("a-3")).toBe("baseline");
  });

  it("retries only a rolled-back or aborted rollout, from its canary, and tells the change log of the rollback", () => {
    const { created, ended } = steered();
    created.staged([{ before: OLD, after: NEW }], "discovery change of pay");
    const first = created.status()!;
    expect(created.act("retry")).toBe(`rollout ${first.id} is applying: only a rolled-back or aborted one can be retried`);
    expect(created.act("rollback")).toBeNull();
    expect(ended).toEqual([{ id: first.id, target: [{ backend: "be_pay", version: NEW.version }], reason: `rollout ${first.id}: rolled back by the operator` }]);
    expect(versions(created)).toEqual(AGENTS.map(() => OLD.version));
    expect(created.act("retry")).toBeNull();
    const retried = created.status()!;
    expect(retried).toMatchObject({ phase: "applying", wave: 0, reason: `retry of ${first.id}: discovery change of pay`, backends: ["be_pay"] });
    expect(retried.id).not.toBe(first.id);
    expect(retried.target).toEqual([{ backend: "be_pay", version: NEW.version, servers: 3 }]);
    expect(versions(created).filter((version) => version === NEW.version)).toHaveLength(1);
  });
});
