import { describe, expect, it } from "vitest";
import { rolloutConfigSchema, type RolloutConfigInput } from "../../controller/rollout/rollout-config.js";
import { planWaves, stableScore, type PlannedAgent } from "../../controller/rollout/waves.js";

const ID = "r-1";

function fleet(size: number, labels: (index: number) => Record<string, string> = () => ({})): PlannedAgent[] {
  return Array.from({ length: size }, (_, index) => ({ id: `edge-${index}`, labels: labels(index) }));
}

function plan(agents: readonly PlannedAgent[], config: RolloutConfigInput = {}, rolloutId = ID): string[][] {
  return planWaves(agents, rolloutConfigSchema.parse(config), rolloutId);
}

function sizes(waves: string[][]): number[] {
  return waves.map((wave) => wave.length);
}

function byScore(ids: readonly string[], rolloutId = ID): string[] {
  return [...ids].sort((a, b) => stableScore(rolloutId, a) - stableScore(rolloutId, b));
}

describe("stableScore", () => {
  it("is in [0, 1) and the same on every call", () => {
    for (const agent of fleet(500)) {
      const score = stableScore(ID, agent.id);
      expect(score).toBeGreaterThanOrEqual(0);
      expect(score).toBeLessThan(1);
      expect(stableScore(ID, agent.id)).toBe(score);
    }
  });

  it("spreads agents evenly enough to sample by it", () => {
    const scores = fleet(2000).map((agent) => stableScore(ID, agent.id));
    const mean = scores.reduce((sum, score) => sum + score, 0) / scores.length;
    expect(mean).toBeGreaterThan(0.45);
    expect(mean).toBeLessThan(0.55);
    expect(scores.filter((score) => score < 0.1).length).toBeGreaterThan(150);
    expect(scores.filter((score) => score < 0.1).length).toBeLessThan(250);
  });

  it("orders the fleet differently for another rollout", () => {
    const ids = fleet(50).map((agent) => agent.id);
    expect(byScore(ids, "r-2")).not.toEqual(byScore(ids, "r-1"));
  });

  it("keeps the rollout id and the agent id apart", () => {
    expect(stableScore("ab", "c")).not.toBe(stableScore("a", "bc"));
  });
});

describe("planWaves", () => {
  it("plans nothing for an empty fleet", () => {
    expect(plan([])).toEqual([]);
  });

  it("puts a single agent in one wave", () => {
    expect(plan(fleet(1))).toEqual([["edge-0"]]);
  });

  it.each<[string, number, RolloutConfigInput, number[]]>([
    ["the defaults over 40 agents", 40, {}, [1, 4, 6, 10, 19]],
    ["the defaults over 2 agents", 2, {}, [1, 1]],
    ["waves rounding to the same agent are merged", 4, {}, [1, 1, 1, 1]],
    ["a canary larger than the fleet", 3, { canary: { count: 10 } }, [3]],
    ["a canary as large as the fleet", 3, { canary: { count: 3 } }, [3]],
    ["a canary share of 1", 25, { canary: { share: 1 } }, [25]],
    ["7% of 100 is 7, not 8", 100, { canary: { share: 0.07 }, waves: [1] }, [7, 93]],
    ["7% of the 100 agents after the canary is 7, not 8", 101, { waves: [0.07, 1] }, [1, 7, 93]],
    ["a 5% canary of 10 is 1", 10, { canary: { share: 0.05 }, waves: [1] }, [1, 9]],
    ["a 25% canary of 10 rounds up to 3", 10, { canary: { share: 0.25 }, waves: [1] }, [3, 7]],
    ["a tiny canary share is still one agent", 3, { canary: { share: 0.001 }, waves: [1] }, [1, 2]],
    ["one wave after the canary", 5, { waves: [1] }, [1, 4]],
    ["shares of the agents after the canary", 11, { canary: { count: 1 }, waves: [0.3, 0.7, 1] }, [1, 3, 4, 3]],
  ])("sizes: %s", (_name, size, config, expected) => {
    expect(sizes(plan(fleet(size), config))).toEqual(expected);
  });

  it.each([1, 2, 3, 7, 10, 33, 100, 257])("puts each of %i agents in exactly one wave, none empty, in score order", (size) => {
    for (const config of [{}, { canary: { share: 0.3 } }, { canary: { count: 4 }, waves: [0.5, 0.75, 1] }, { waves: [0.01, 0.02, 1] }] satisfies RolloutConfigInput[]) {
      const ids = fleet(size).map((agent) => agent.id);
      const waves = plan(fleet(size), config);
      expect(waves.every((wave) => wave.length > 0)).toBe(true);
      expect(waves.flat()).toEqual(byScore(ids));
    }
  });

  it("takes the lowest scores as the canary when no selector is given", () => {
    const [canary] = plan(fleet(20), { canary: { count: 3 } });
    expect(canary).toEqual(byScore(fleet(20).map((agent) => agent.id)).slice(0, 3));
  });

  it("chooses the canary among the agents the selector matches, by score", () => {
    const agents = fleet(30, (index) => (index % 5 === 0 ? { region: "eu", role: "edge" } : { region: "us", role: "edge" }));
    const eu = agents.filter((agent) => agent.labels["region"] === "eu").map((agent) => agent.id);
    const waves = plan(agents, { canary: { count: 2 }, canarySelector: { region: "eu", role: "edge" } });
    expect(waves[0]).toEqual(byScore(eu).slice(0, 2));
    expect(waves.flat().sort()).toEqual(agents.map((agent) => agent.id).sort());
  });

  it("fills the canary with other agents, by score, when too few match", () => {
    const agents = fleet(12, (index): Record<string, string> => (index < 2 ? { region: "eu" } : {}));
    const others = byScore(agents.slice(2).map((agent) => agent.id));
    const [canary, ...rest] = plan(agents, { canary: { count: 5 }, canarySelector: { region: "eu" } });
    expect(canary).toEqual([...byScore(["edge-0", "edge-1"]), ...others.slice(0, 3)]);
    expect(rest.flat()).toEqual(others.slice(3));
  });

  it("plans as if there were no selector when no agent matches", () => {
    const agents = fleet(20, () => ({ region: "us" }));
    expect(plan(agents, { canary: { count: 3 }, canarySelector: { region: "eu" } })).toEqual(plan(agents, { canary: { count: 3 } }));
  });

  it("needs every label of the selector to match", () => {
    const agents = fleet(10, (index): Record<string, string> => (index === 7 ? { region: "eu", role: "edge" } : { region: "eu" }));
    expect(plan(agents, { canarySelector: { region: "eu", role: "edge" } })[0]).toEqual(["edge-7"]);
  });

  it("plans the same waves whatever the order of the agents, on every call", () => {
    const agents = fleet(60, (index) => ({ zone: `z${index % 3}` }));
    const config = { canary: { share: 0.05 }, canarySelector: { zone: "z1" } };
    const first = plan(agents, config);
    expect(plan([...agents].reverse(), config)).toEqual(first);
    expect(plan(agents, config)).toEqual(first);
  });

  it("plans another order for another rollout", () => {
    expect(plan(fleet(60), {}, "r-2")).not.toEqual(plan(fleet(60), {}, "r-1"));
  });

  it("lists an agent given twice once", () => {
    const agents = fleet(5);
    expect(plan([...agents, ...agents]).flat().sort()).toEqual(agents.map((agent) => agent.id).sort());
  });
});
