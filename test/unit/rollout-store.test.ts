import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { rolloutConfigSchema } from "../../controller/rollout/rollout-config.js";
import { pause, startRollout, type RolloutState } from "../../controller/rollout/rollout-state.js";
import { RolloutStore } from "../../controller/rollout/rollout-store.js";

const payload = z.strictObject({ servers: z.array(z.string()) });
type Payload = z.output<typeof payload>;

const silent = pino({ level: "silent" });

function rollout(): RolloutState<Payload> {
  const agents = ["edge-1", "edge-2", "edge-3"].map((id) => ({ id, labels: {} }));
  const context = { now: 1000, config: rolloutConfigSchema.parse({}), observe: () => ({ connected: true, backends: [{ backend: "be_app", state: "in-sync" as const }], servingShare: 1 }) };
  const state = startRollout({ id: "r1", reason: "staged change of web", backends: ["be_app"], agents, baseline: { servers: ["a"] }, target: { servers: ["a", "b"] } }, context);
  const paused = pause(state, 2000);
  if (!paused.ok) throw paused.error;
  return paused.state;
}

describe("RolloutStore", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "hafleet-rollout-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("has no rollout before the first save", async () => {
    expect(await new RolloutStore(join(dir, "missing"), payload, silent).load()).toBeNull();
  });

  it("reads back what it saved, creating the state dir, readable by its owner only", async () => {
    const store = new RolloutStore(join(dir, "state"), payload, silent);
    const state = rollout();
    await store.save(state);
    expect(store.path).toBe(join(dir, "state", "rollout.json"));
    expect(await new RolloutStore(join(dir, "state"), payload, silent).load()).toEqual(state);
    expect((await stat(store.path)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(store.path, "utf8"))).toMatchObject({ format: 1, id: "r1", phase: "paused" });
    expect(await readdir(join(dir, "state"))).toEqual(["rollout.json"]);
  });

  it("replaces the saved rollout", async () => {
    const store = new RolloutStore(dir, payload, silent);
    await store.save(rollout());
    await store.save({ ...rollout(), id: "r2" });
    expect((await store.load())?.id).toBe("r2");
  });

  it.each([
    ["text that is not JSON", "{ not json", "not valid JSON"],
    ["a payload the caller does not accept", JSON.stringify({ ...rollout(), baseline: { servers: [1] } }), "baseline.servers[0]"],
    ["a state that contradicts itself", JSON.stringify({ ...rollout(), wave: 7 }), "wave: must be a wave of the plan"],
  ])("moves %s aside, logs it with the file named, and starts with no rollout", async (_name, text, detail) => {
    const lines: string[] = [];
    const logger = pino({ level: "error" }, { write: (line: string) => void lines.push(line) });
    const store = new RolloutStore(dir, payload, logger, () => 1234);
    await writeFile(store.path, text);
    expect(await store.load()).toBeNull();
    expect((await readdir(dir)).sort()).toEqual(["rollout.json.corrupt-1234"]);
    expect(await readFile(join(dir, "rollout.json.corrupt-1234"), "utf8")).toBe(text);
    expect(lines).toHaveLength(1);
    const logged = JSON.parse(lines[0]!) as { level: number; file: string; movedTo: string; err: string; msg: string };
    expect(logged).toMatchObject({ level: 50, file: store.path, movedTo: `${store.path}.corrupt-1234`, msg: "stored rollout state is corrupt: moved aside, starting with no rollout" });
    expect(logged.err).toContain(detail);
  });

  it("fails loudly when the file cannot be read at all", async () => {
    const store = new RolloutStore(dir, payload, silent);
    await mkdir(store.path);
    await expect(store.load()).rejects.toMatchObject({ code: "EISDIR" });
  });
});
