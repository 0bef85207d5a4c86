import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { InvalidInputError } from "../../agent/errors.js";
import {
  appliedVersions,
  emptyDesiredSet,
  LocalStore,
  markApplied,
  mergePush,
  parseDesiredSet,
  serializeDesiredSet,
  type DesiredSet,
} from "../../agent/run/local-store.js";
import { desiredPushSchema, type DesiredPush } from "../../proto/messages.js";
import { caught } from "../support/helpers.js";

const silent = pino({ level: "silent" });

function push(raw: { version?: string; backends?: Array<{ name: string; version: string; servers: Array<{ address: string; port: number; weight?: number }>; allowEmpty?: boolean }>; removed?: string[] }): DesiredPush {
  return desiredPushSchema.parse({
    nonce: "n",
    version: raw.version ?? "set",
    backends: (raw.backends ?? []).map((backend) => ({ allowEmpty: false, ...backend })),
    removedBackends: raw.removed ?? [],
  });
}

const A1 = { name: "be_a", version: "a1", servers: [{ address: "10.0.0.1", port: 80 }] };
const B1 = { name: "be_b", version: "b1", servers: [{ address: "10.0.0.2", port: 81, weight: 7 }], allowEmpty: true };

function summary(set: DesiredSet): Record<string, string> {
  return Object.fromEntries([...set.backends.values()].map((b) => [b.name, `${b.version}/${b.appliedVersion}/${b.allowEmpty}/${b.servers.map((s) => `${s.address}:${s.port}`).join(",")}`]));
}

describe("mergePush", () => {
  it("adds pushed backends with no applied version yet and takes the push's version", () => {
    const set = mergePush(emptyDesiredSet(), push({ version: "s1", backends: [A1, B1] }));
    expect(set.version).toBe("s1");
    expect(summary(set)).toEqual({ be_a: "a1//false/10.0.0.1:80", be_b: "b1//true/10.0.0.2:81" });
  });

  it("replaces a pushed backend entirely and keeps its applied version", () => {
    const applied = markApplied(mergePush(emptyDesiredSet(), push({ backends: [A1] })), new Map());
    const next = mergePush(applied, push({ backends: [{ name: "be_a", version: "a2", servers: [{ address: "10.0.0.9", port: 90 }] }] }));
    expect(summary(next)).toEqual({ be_a: "a2/a1/false/10.0.0.9:90" });
  });

  it("leaves backends the push does not mention as they are", () => {
    const first = mergePush(emptyDesiredSet(), push({ backends: [A1, B1] }));
    const next = mergePush(first, push({ backends: [{ ...A1, version: "a2" }] }));
    expect(next.backends.get("be_b")).toBe(first.backends.get("be_b"));
  });

  it("forgets removed backends, and removing an unknown one is harmless", () => {
    const first = mergePush(emptyDesiredSet(), push({ backends: [A1, B1] }));
    expect(summary(mergePush(first, push({ removed: ["be_a", "be_zzz"] })))).toEqual({ be_b: "b1//true/10.0.0.2:81" });
  });

  it("takes an empty server list as it is (allowEmpty decides later)", () => {
    const set = mergePush(emptyDesiredSet(), push({ backends: [{ name: "be_a", version: "e", servers: [] }] }));
    expect(set.backends.get("be_a")!.servers).toEqual([]);
  });

  it("does not change the set it was given", () => {
    const first = mergePush(emptyDesiredSet(), push({ backends: [A1] }));
    mergePush(first, push({ removed: ["be_a"] }));
    expect(first.backends.has("be_a")).toBe(true);
  });
});

describe("markApplied and appliedVersions", () => {
  const set = mergePush(emptyDesiredSet(), push({ backends: [A1, B1] }));

  it("records the current version of every backend without a failure", () => {
    const marked = markApplied(set, new Map([["be_b", "socket: nope"]]));
    expect(appliedVersions(marked)).toEqual({ be_a: "a1", be_b: "" });
  });

  it("returns the same object when nothing changes, so no write is needed", () => {
    const marked = markApplied(set, new Map());
    expect(markApplied(marked, new Map())).toBe(marked);
    expect(markApplied(set, new Map([["be_a", "x"], ["be_b", "y"]]))).toBe(set);
  });

  it("keeps the last good version of a backend that fails later", () => {
    const good = markApplied(set, new Map());
    const next = markApplied(mergePush(good, push({ backends: [{ ...A1, version: "a2" }] })), new Map([["be_a", "failed"]]));
    expect(appliedVersions(next)).toEqual({ be_a: "a1", be_b: "b1" });
  });

  it("lists never-applied backends in the hello with an empty version, so the controller can remove them", () => {
    expect(appliedVersions(set)).toEqual({ be_a: "", be_b: "" });
  });

  it("keeps a backend named __proto__ as a plain key", () => {
    const odd = markApplied(mergePush(emptyDesiredSet(), push({ backends: [{ ...A1, name: "__proto__" }] })), new Map());
    const versions = appliedVersions(odd);
    expect(Object.keys(versions)).toEqual(["__proto__"]);
    expect(Object.getPrototypeOf(versions)).toBe(Object.prototype);
  });
});

describe("the stored file format", () => {
  const set = markApplied(mergePush(emptyDesiredSet(), push({ version: "s1", backends: [B1, A1] })), new Map([["be_b", "x"]]));

  it("round-trips, backends sorted by name", () => {
    const text = serializeDesiredSet(set);
    expect((JSON.parse(text) as { backends: Array<{ name: string }> }).backends.map((b) => b.name)).toEqual(["be_a", "be_b"]);
    const back = parseDesiredSet(text, "f");
    expect(back.version).toBe("s1");
    expect(summary(back)).toEqual(summary(set));
    expect(back.backends.get("be_b")!.servers[0]!.weight).toBe(7);
  });

  it("canonicalises addresses as the wire does", () => {
    const text = JSON.stringify({ format: 1, version: "", backends: [{ name: "be", version: "v", allowEmpty: false, appliedVersion: "", servers: [{ address: "2001:DB8:0::1", port: 80 }] }] });
    expect(parseDesiredSet(text, "f").backends.get("be")!.servers[0]!.address).toBe("2001:db8::1");
  });

  const bad: Array<[string, string, RegExp]> = [
    ["not JSON", "{", /not valid JSON/],
    ["another format", JSON.stringify({ format: 2, version: "", backends: [] }), /format/],
    ["an unknown field", JSON.stringify({ format: 1, version: "", backends: [], extra: 1 }), /unknown field/],
    [
      "a backend twice",
      JSON.stringify({ format: 1, version: "", backends: [1, 2].map(() => ({ name: "be", version: "v", allowEmpty: false, appliedVersion: "", servers: [] })) }),
      /listed twice/,
    ],
    [
      "an address with a command in it",
      JSON.stringify({ format: 1, version: "", backends: [{ name: "be", version: "v", allowEmpty: false, appliedVersion: "", servers: [{ address: "1.2.3.4;show info", port: 80 }] }] }),
      /IPv4 or IPv6/,
    ],
    [
      "a duplicate server",
      JSON.stringify({ format: 1, version: "", backends: [{ name: "be", version: "v", allowEmpty: false, appliedVersion: "", servers: [{ address: "1.2.3.4", port: 80 }, { address: "1.2.3.4", port: 80 }] }] }),
      /duplicates/,
    ],
    ["a bad name", JSON.stringify({ format: 1, version: "", backends: [{ name: "b e", version: "v", allowEmpty: false, appliedVersion: "", servers: [] }] }), /letters/],
  ];
  it.each(bad)("refuses %s, naming the source", (_, text, message) => {
    const error = caught(() => parseDesiredSet(text, "/state/desired.json"));
    expect(error).toBeInstanceOf(InvalidInputError);
    expect((error as Error).message).toMatch(/^\/state\/desired\.json: /);
    expect((error as Error).message).toMatch(message);
  });
});

describe("LocalStore", () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });
  async function store(clock?: () => number): Promise<LocalStore> {
    dir = await mkdtemp(join(tmpdir(), "hafleet-store-"));
    return new LocalStore(join(dir, "state"), silent, clock);
  }

  it("starts empty when nothing was stored", async () => {
    const s = await store();
    expect((await s.load()).backends.size).toBe(0);
  });

  it("saves atomically (no temp file left) and loads what it saved", async () => {
    const s = await store();
    const set = mergePush(emptyDesiredSet(), push({ version: "s9", backends: [A1, B1] }));
    await s.save(set);
    expect(await readdir(join(dir!, "state"))).toEqual(["desired.json"]);
    expect(summary(await s.load())).toEqual(summary(set));
    await s.save(mergePush(set, push({ removed: ["be_a"] })));
    expect([...(await s.load()).backends.keys()]).toEqual(["be_b"]);
  });

  it("moves a corrupt file aside, logs it with the file named, and starts empty", async () => {
    const lines: string[] = [];
    const logger = pino({ level: "error" }, { write: (line: string) => void lines.push(line) });
    dir = await mkdtemp(join(tmpdir(), "hafleet-store-"));
    const s = new LocalStore(dir, logger, () => 1234);
    await writeFile(s.path, '{"format":1,"version":"","backends":[{"name":"be"}]}');
    expect((await s.load()).backends.size).toBe(0);
    expect((await readdir(dir)).sort()).toEqual(["desired.json.corrupt-1234"]);
    expect(await readFile(join(dir, "desired.json.corrupt-1234"), "utf8")).toContain('"name":"be"');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 50, file: s.path, movedTo: `${s.path}.corrupt-1234` });
  });
});
