import { describe, expect, it } from "vitest";
import { HafleetError } from "../../agent/errors.js";
import type { ServiceSnapshot } from "../../controller/discovery/service-snapshot.js";
import { toServers } from "../../controller/discovery/service-snapshot.js";
import { healthServiceUrl, responseTimeoutMs, type HealthAnswer } from "../../controller/discovery/consul/consul-client.js";
import { ConsulAnswerError, parseAddressChoice, parseConsulIndex, parseHealthAnswer, worstStatus, type AnswerOptions } from "../../controller/discovery/consul/consul-response.js";
import {
  backoffDelay,
  ConsulWatch,
  isNewAnswer,
  nextIndex,
  serverSetFingerprint,
  type WatchClock,
} from "../../controller/discovery/consul/consul-watch.js";
import { fullBucket, takeToken } from "../../controller/core/token-bucket.js";
import { caught, seededRandom } from "../support/helpers.js";

const META: AnswerOptions = { service: "web", healthy: "passing", weights: "meta" };

type Status = "passing" | "warning" | "critical";

/** One entry as Consul sends it, with `overrides` merged into Service. */
function entry(id: string, service: Record<string, unknown> = {}, statuses: Status[] = ["passing"], node: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    Node: { ID: "n", Node: "node-a", Address: "10.1.0.1", Datacenter: "dc1", TaggedAddresses: {}, Meta: {}, CreateIndex: 1, ModifyIndex: 1, ...node },
    Service: { ID: id, Service: "web", Tags: [], Address: "10.0.0.1", Meta: {}, Port: 8080, Weights: { Passing: 1, Warning: 1 }, EnableTagOverride: false, NewField2030: { x: 1 }, ...service },
    Checks: [
      { Node: "node-a", CheckID: "serfHealth", Status: "passing", Type: "" },
      ...statuses.map((Status, i) => ({ Node: "node-a", CheckID: `service:${id}:${i}`, Status, Type: "ttl" })),
    ],
  };
}

function parse(entries: unknown[], options: AnswerOptions = META) {
  return parseHealthAnswer(JSON.stringify(entries), options);
}

function answerError(run: () => unknown): ConsulAnswerError {
  const error = caught(run);
  expect(error).toBeInstanceOf(ConsulAnswerError);
  expect(error).toBeInstanceOf(HafleetError);
  expect((error as ConsulAnswerError).code).toBe("HAFLEET_CONSUL_BAD_ANSWER");
  return error as ConsulAnswerError;
}

describe("parseHealthAnswer: the answer as a whole", () => {
  it("turns entries into raw instances, ignoring fields it does not use", () => {
    const result = parse([entry("a"), entry("b", { Address: "10.0.0.2", Port: 9090 })]);
    expect(result).toEqual({
      instances: [
        { id: "node-a/a", address: "10.0.0.1", port: 8080 },
        { id: "node-a/b", address: "10.0.0.2", port: 9090 },
      ],
      dropped: [],
      unhealthy: 0,
    });
  });

  it("takes the node's address when the service has none", () => {
    expect(parse([entry("a", { Address: "" })]).instances).toEqual([{ id: "node-a/a", address: "10.1.0.1", port: 8080 }]);
  });

  it("accepts an empty array: the service has no instance", () => {
    expect(parse([])).toEqual({ instances: [], dropped: [], unhealthy: 0 });
  });

  it.each([
    ["truncated JSON", '[{"Node": {"Node": "a"', /not valid JSON/],
    ["an object", '{"Node": {}}', /not an array of entries: Invalid input: expected array, received object/],
    ["null", "null", /not an array of entries/],
    ["an HTML error page", "<html>502 Bad Gateway</html>", /not valid JSON.*<html>502 Bad Gateway/],
    ["an array holding a number", '[{"Node": {}}, 3]', /not an array of entries at \[1\]: .*expected record, received number/],
    ["an array holding null", "[null]", /not an array of entries at \[0\]/],
    ["an array holding an array", "[[]]", /not an array of entries at \[0\]/],
    ["an empty body", "", /not valid JSON/],
  ])("fails the whole answer on %s, naming the fault", (_name, body, message) => {
    const error = answerError(() => parseHealthAnswer(body, META));
    expect(error.message).toMatch(message);
    expect(error.service).toBe("web");
  });

  it("quotes at most the start of a huge bad body", () => {
    const error = answerError(() => parseHealthAnswer(`<${"x".repeat(100_000)}`, META));
    expect(error.message.length).toBeLessThan(500);
  });
});

describe("parseHealthAnswer: one bad entry costs only itself", () => {
  it("passes a bad port, address or weight through, so toServers drops it with the reason", () => {
    const result = parse([
      entry("good"),
      entry("port-string", { Address: "10.0.0.2", Port: "8080" }),
      entry("port-huge", { Address: "10.0.0.3", Port: 70000 }),
      entry("injection", { Address: "10.0.0.4;shutdown sessions" }),
      entry("newline", { Address: "10.0.0.5\nset server be/s1 state maint" }),
      entry("hostname", { Address: "web.internal" }),
      entry("weight", { Address: "10.0.0.6", Meta: { "hafleet-weight": "300" } }),
    ]);
    // A DNS name is refused here, by name, with what to do instead (see the README's Consul section).
    expect(result.dropped).toEqual([{ id: "node-a/hostname", reason: 'address "web.internal" is a DNS name: hafleet sends IP addresses only; register the instance with an IP, or pick one with the mapping\'s address (e.g. service:lan_ipv4)' }]);
    const { servers, dropped } = toServers(result.instances);
    expect(servers).toEqual([{ address: "10.0.0.1", port: 8080 }]);
    expect(dropped.map((instance) => instance.id)).toEqual(["node-a/port-string", "node-a/port-huge", "node-a/injection", "node-a/newline", "node-a/weight"]);
    expect(dropped[0]?.reason).toBe('port: must be a number (got "8080")');
    expect(dropped[1]?.reason).toBe("port: must be between 1 and 65535 (got 70000)");
    expect(dropped[2]?.reason).toBe('address: must be an IPv4 or IPv6 literal (got "10.0.0.4;shutdown sessions")');
    expect(dropped[4]?.reason).toBe("weight: must be between 0 and 256 (got 300)");
  });

  it("drops an entry whose structure is wrong, with the field named, and keeps the others", () => {
    const noChecks = entry("no-checks");
    delete noChecks["Checks"];
    const result = parse([
      entry("good"),
      noChecks,
      { ...entry("bad-status"), Checks: [{ CheckID: "x", Status: "maintenance" }] },
      entry("", {}),
      { Node: "not an object", Service: { ID: "s" } },
      { Service: { ID: 5 } },
    ]);
    expect(result.instances.map((instance) => instance.id)).toEqual(["node-a/good"]);
    expect(result.dropped).toEqual([
      { id: "node-a/no-checks", reason: "Checks: Invalid input: expected array, received undefined" },
      { id: "node-a/bad-status", reason: 'Checks.0.Status: Invalid option: expected one of "passing"|"warning"|"critical"' },
      { id: "node-a/", reason: "Service.ID: Too small: expected string to have >=1 characters" },
      { id: "entry[4]", reason: expect.stringMatching(/^Node: Invalid input: expected object, received string; Service.Service: Invalid input: expected string, received undefined; Checks: /) },
      { id: "entry[5]", reason: expect.stringMatching(/^Node: Invalid input: expected object, received undefined; Service.ID: Invalid input: expected string, received number;/) },
    ]);
  });

  it("drops an entry of another service (Consul matches names case-insensitively)", () => {
    const result = parse([entry("a", { Service: "WEB" }), entry("b", { Service: "api" })]);
    expect(result.instances.map((instance) => instance.id)).toEqual(["node-a/a"]);
    expect(result.dropped).toEqual([{ id: "node-a/b", reason: "belongs to service 'api', not 'web'" }]);
  });

  it("accepts Go's null for an empty list or map", () => {
    const result = parse([{ ...entry("a", { Meta: null, Tags: null }), Checks: null }]);
    expect(result.instances).toEqual([{ id: "node-a/a", address: "10.0.0.1", port: 8080 }]);
  });
});

describe("parseHealthAnswer: health", () => {
  const statuses: [Status[], boolean, boolean][] = [
    [["passing"], true, true],
    [["passing", "warning"], false, true],
    [["critical"], false, false],
    [["warning", "critical"], false, false],
    [[], true, true],
  ];
  it.each(statuses)("checks %j: kept under passing=%s, under passing-or-warning=%s", (checks, passing, warningToo) => {
    expect(parse([entry("a", {}, checks)], { ...META, healthy: "passing" }).instances.length).toBe(passing ? 1 : 0);
    expect(parse([entry("a", {}, checks)], { ...META, healthy: "passing-or-warning" }).instances.length).toBe(warningToo ? 1 : 0);
  });

  it("counts a node's own check (serfHealth) like the service's", () => {
    const sick = entry("a");
    (sick["Checks"] as { Status: string }[])[0]!.Status = "critical";
    expect(parse([sick], { ...META, healthy: "passing-or-warning" })).toEqual({ instances: [], dropped: [], unhealthy: 1 });
  });

  it("worstStatus orders passing < warning < critical", () => {
    expect(worstStatus([])).toBe("passing");
    expect(worstStatus(["warning", "passing"])).toBe("warning");
    expect(worstStatus(["passing", "critical", "warning"])).toBe("critical");
  });
});

describe("parseHealthAnswer: weights", () => {
  it.each([
    [{ "hafleet-weight": "10" }, 10],
    [{ "hafleet-weight": "0" }, 0],
    [{ "hafleet-weight": "256" }, 256],
    [{ "hafleet-weight": "010" }, 10],
    [{ "hafleet-weight": "257" }, 257],
    [{ "hafleet-weight": "99999999999999999999999" }, 1e23],
    [{ "hafleet-weight": "abc" }, "abc"],
    [{ "hafleet-weight": "" }, ""],
    [{ "hafleet-weight": " 5" }, " 5"],
    [{ "hafleet-weight": "-1" }, "-1"],
    [{ "hafleet-weight": "1e2" }, "1e2"],
    [{ "hafleet-weight": 5 }, 5],
  ])("meta %j gives weight %j (toServers judges it)", (meta, weight) => {
    expect(parse([entry("a", { Meta: meta })]).instances[0]?.weight).toEqual(weight);
  });

  it("leaves the weight absent without the meta key, so the slot's own weight applies", () => {
    expect("weight" in parse([entry("a", { Meta: { other: "1" } })]).instances[0]!).toBe(false);
  });

  it("drops an instance whose meta weight is not an integer 0..256", () => {
    const { servers, dropped } = toServers(parse([entry("a", { Meta: { "hafleet-weight": "abc" } }), entry("b", { Address: "10.0.0.2", Meta: { "hafleet-weight": "12" } })]).instances);
    expect(servers).toEqual([{ address: "10.0.0.2", port: 8080, weight: 12 }]);
    expect(dropped).toEqual([{ id: "node-a/a", reason: 'weight: must be a number (got "abc")' }]);
  });

  it("under weights=consul takes Weights.Passing, or Warning for a warning instance, scaled into 0..256 when one is above", () => {
    const options: AnswerOptions = { ...META, weights: "consul", healthy: "passing-or-warning" };
    const result = parse(
      [
        entry("a", { Weights: { Passing: 10, Warning: 1 } }),
        entry("b", { Weights: { Passing: 10, Warning: 3 } }, ["warning"]),
        entry("c", { Weights: { Passing: 1000, Warning: 1 } }),
        entry("d", { Weights: { Passing: 5, Warning: 0 } }, ["warning"]),
      ],
      options,
    );
    // 1000 is the largest: every weight is scaled by 256/1000, a non-zero one never below 1.
    expect(result.instances.map((instance) => instance.weight)).toEqual([3, 1, 256, 0]);
  });

  it("keeps the shares of Consul weights above 256 instead of clamping them all to 256", () => {
    const options: AnswerOptions = { ...META, weights: "consul" };
    const result = parse([entry("a", { Weights: { Passing: 300, Warning: 1 } }), entry("b", { Weights: { Passing: 1000, Warning: 1 } }), entry("c", { Weights: { Passing: 100, Warning: 1 } })], options);
    expect(result.instances.map((instance) => instance.weight)).toEqual([77, 256, 26]);
    const small = parse([entry("a", { Weights: { Passing: 200, Warning: 1 } }), entry("b", { Weights: { Passing: 1, Warning: 1 } })], options);
    expect(small.instances.map((instance) => instance.weight)).toEqual([200, 1]);
  });

  it("takes the address the mapping chose: the node's, or a tagged one of the service (with its port) or of the node", () => {
    const tagged = entry("t", {
      Address: "10.0.0.9",
      Port: 8080,
      TaggedAddresses: { lan_ipv4: { Address: "10.0.0.9", Port: 8080 }, wan_ipv4: { Address: "198.51.100.9", Port: 18080 }, lan_ipv6: { Address: "2001:db8::9", Port: 8080 } },
    });
    const withNode = { ...tagged, Node: { ...(tagged["Node"] as object), Address: "10.1.0.1", TaggedAddresses: { lan: "10.1.0.1", wan: "203.0.113.1" } } };
    const choose = (address: string) => parse([withNode], { ...META, address: parseAddressChoice(address) });
    expect(choose("service").instances).toMatchObject([{ address: "10.0.0.9", port: 8080 }]);
    expect(choose("node").instances).toMatchObject([{ address: "10.1.0.1", port: 8080 }]);
    expect(choose("service:wan_ipv4").instances).toMatchObject([{ address: "198.51.100.9", port: 18080 }]);
    expect(choose("service:lan_ipv6").instances).toMatchObject([{ address: "2001:db8::9", port: 8080 }]);
    expect(choose("node:wan").instances).toMatchObject([{ address: "203.0.113.1", port: 8080 }]);
    expect(choose("service:virtual").dropped).toEqual([{ id: "node-a/t", reason: "no Service.TaggedAddresses.virtual" }]);
  });

  it("under weights=consul drops an instance without usable Weights", () => {
    const options: AnswerOptions = { ...META, weights: "consul" };
    const noWeights = entry("a");
    delete (noWeights["Service"] as Record<string, unknown>)["Weights"];
    const result = parse([noWeights, entry("b", { Weights: { Passing: "10", Warning: 1 } })], options);
    expect(result.instances).toEqual([]);
    expect(result.dropped).toEqual([
      { id: "node-a/a", reason: "Service.Weights: value: Invalid input: expected object, received undefined" },
      { id: "node-a/b", reason: "Service.Weights: Passing: Invalid input: expected number, received string" },
    ]);
  });
});

describe("parseConsulIndex", () => {
  it("reads a decimal index", () => {
    expect(parseConsulIndex("12345", "web")).toBe(12345);
    expect(parseConsulIndex("0", "web")).toBe(0);
  });

  it.each([[undefined, /no X-Consul-Index/], ["", /not a number/], ["12a", /not a number/], ["-1", /not a number/], ["1.5", /not a number/], [" 7", /not a number/], ["99999999999999999", /not a number/], ["9007199254740993", /too large/]])(
    "refuses %j",
    (header, message) => {
      expect(answerError(() => parseConsulIndex(header, "web")).message).toMatch(message);
    },
  );
});

describe("healthServiceUrl and the response timeout", () => {
  const base = new URL("http://127.0.0.1:8500");

  it("asks at once without index, blocks with index and wait", () => {
    expect(healthServiceUrl({ base, service: "web", tag: null, passing: true, index: 0, waitMs: 300_000 }).href).toBe("http://127.0.0.1:8500/v1/health/service/web?passing=1");
    expect(healthServiceUrl({ base, service: "web", tag: "v1", datacenter: "dc2", passing: false, index: 42, waitMs: 300_000 }).href).toBe("http://127.0.0.1:8500/v1/health/service/web?tag=v1&dc=dc2&index=42&wait=300000ms");
  });

  it("encodes the service and tag so they cannot reshape the URL", () => {
    const url = healthServiceUrl({ base, service: "../agent/self?x=1#", tag: "a&index=1 b", passing: true, index: 0, waitMs: 1000 });
    expect(url.pathname).toBe("/v1/health/service/..%2Fagent%2Fself%3Fx%3D1%23");
    expect(url.searchParams.getAll("tag")).toEqual(["a&index=1 b"]);
    expect(url.searchParams.has("index")).toBe(false);
  });

  it("keeps a path prefix of the address", () => {
    expect(healthServiceUrl({ base: new URL("http://proxy/consul/"), service: "web", tag: null, passing: false, index: 0, waitMs: 1 }).href).toBe("http://proxy/consul/v1/health/service/web");
  });

  it("waits wait + wait/16 + the margin", () => {
    expect(responseTimeoutMs(300_000, 15_000)).toBe(333_750);
    expect(responseTimeoutMs(1600, 0)).toBe(1700);
  });
});

describe("index rules", () => {
  it.each([
    [0, 10, 10, "first answer"],
    [10, 12, 12, "moved on"],
    [10, 10, 10, "same index: wait again on it"],
    [10, 3, 0, "went backwards: restart with a query that answers at once"],
    [0, 0, 1, "0 is a Consul bug: 1 still blocks"],
    [10, 0, 1, "0 after a real index: 1, never a busy loop"],
  ])("sent %d, got %d: next is %d (%s)", (sent, returned, next) => {
    expect(nextIndex(sent, returned)).toBe(next);
  });

  it("takes the same index as no change, except for the first answer", () => {
    expect(isNewAnswer(10, 10, true)).toBe(false);
    expect(isNewAnswer(10, 11, true)).toBe(true);
    expect(isNewAnswer(0, 0, false)).toBe(true);
    expect(isNewAnswer(1, 1, false)).toBe(true);
  });
});

describe("token bucket", () => {
  const options = { burst: 2, refillPerSecond: 1 };

  it("lets a burst through at once, then one query per refill", () => {
    let state = fullBucket(options, 0);
    const delays: number[] = [];
    let now = 0;
    for (let i = 0; i < 5; i++) {
      const taken = takeToken(state, now, options);
      delays.push(taken.delayMs);
      state = taken.state;
      now += taken.delayMs;
    }
    expect(delays).toEqual([0, 0, 1000, 1000, 1000]);
  });

  it("refills during a long blocking query, never beyond the burst", () => {
    let state = takeToken(takeToken(fullBucket(options, 0), 0, options).state, 0, options).state;
    state = takeToken(state, 300_000, options).state;
    expect(takeToken(state, 300_000, options).delayMs).toBe(0);
    expect(takeToken(takeToken(state, 300_000, options).state, 300_000, options).delayMs).toBe(1000);
  });

  it("books queries ahead when called faster than it refills", () => {
    const fast = { burst: 1, refillPerSecond: 4 };
    let state = fullBucket(fast, 0);
    state = takeToken(state, 0, fast).state;
    const second = takeToken(state, 0, fast);
    const third = takeToken(second.state, 0, fast);
    expect([second.delayMs, third.delayMs]).toEqual([250, 500]);
  });

  it("bounds the rate over any stretch of time (property, seeded)", () => {
    const random = seededRandom(7);
    for (let round = 0; round < 50; round++) {
      const rate = { burst: 1 + Math.floor(random() * 4), refillPerSecond: 0.5 + random() * 10 };
      let state = fullBucket(rate, 0);
      let now = 0;
      const sent: number[] = [];
      while (now < 20_000) {
        const taken = takeToken(state, now, rate);
        state = taken.state;
        now += taken.delayMs;
        sent.push(now);
        now += random() < 0.5 ? 0 : random() * 50;
      }
      const span = sent[sent.length - 1]! - sent[0]!;
      expect(sent.length).toBeLessThanOrEqual(rate.burst + Math.ceil((span * rate.refillPerSecond) / 1000) + 1);
    }
  });
});

describe("backoff", () => {
  const options = { initialMs: 250, maxMs: 30_000 };

  it("doubles from the initial step up to the cap, half of each step fixed", () => {
    expect([1, 2, 3, 4, 8, 9, 50].map((failures) => backoffDelay(failures, options, () => 0))).toEqual([125, 250, 500, 1000, 15_000, 15_000, 15_000]);
    expect([1, 2, 3, 8, 50].map((failures) => backoffDelay(failures, options, () => 1))).toEqual([250, 500, 1000, 30_000, 30_000]);
  });

  it("stays between half the step and the step, whatever the random number (property)", () => {
    const random = seededRandom(3);
    for (let failures = 1; failures < 40; failures++) {
      const step = Math.min(30_000, 250 * 2 ** (failures - 1));
      const delay = backoffDelay(failures, options, random);
      expect(delay).toBeGreaterThanOrEqual(step / 2);
      expect(delay).toBeLessThanOrEqual(step);
    }
  });
});

describe("serverSetFingerprint", () => {
  const a = toServers([{ id: "a", address: "10.0.0.1", port: 80 }]).servers[0]!;
  const b = toServers([{ id: "b", address: "10.0.0.2", port: 80, weight: 5 }]).servers[0]!;
  const b2 = toServers([{ id: "b", address: "10.0.0.2", port: 80, weight: 6 }]).servers[0]!;
  const v6 = toServers([{ id: "c", address: "2001:db8:0:0::1", port: 80 }]).servers[0]!;

  it("ignores order, sees a weight change", () => {
    expect(serverSetFingerprint([a, b])).toBe(serverSetFingerprint([b, a]));
    expect(serverSetFingerprint([a, b])).not.toBe(serverSetFingerprint([a, b2]));
    expect(serverSetFingerprint([a])).not.toBe(serverSetFingerprint([a, v6]));
    expect(serverSetFingerprint([])).toBe("");
  });
});

// ---- The loop, with a clock that only moves when the loop sleeps ----

class FakeClock implements WatchClock {
  time = 0;
  readonly sleeps: number[] = [];
  now(): number {
    return this.time;
  }
  async sleep(ms: number, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return;
    this.sleeps.push(ms);
    this.time += ms;
  }
}

type Step = HealthAnswer | Error;

/** Answers queries from a script; once it runs out, a query hangs until aborted, like a blocking query. */
function scripted(steps: Step[]) {
  const sent: number[] = [];
  let hung: (() => void) | null = null;
  const hanging = new Promise<void>((resolve) => (hung = resolve));
  const fetch = (index: number, signal: AbortSignal): Promise<HealthAnswer> => {
    sent.push(index);
    const step = steps.shift();
    if (step === undefined) {
      hung?.();
      return new Promise((_resolve, reject) => signal.addEventListener("abort", () => reject(new Error("aborted")), { once: true }));
    }
    return step instanceof Error ? Promise.reject(step) : Promise.resolve(step);
  };
  return { fetch, sent, hanging };
}

function answer(index: number, ...addresses: string[]): HealthAnswer {
  return { index, instances: addresses.map((address, i) => ({ id: `i${i}`, address, port: 80 })), dropped: [] };
}

async function runScript(steps: Step[], extra: { rateLimit?: { burst?: number; refillPerSecond?: number } } = {}) {
  const clock = new FakeClock();
  const script = scripted(steps);
  const snapshots: ServiceSnapshot[] = [];
  const errors: Error[] = [];
  const dropped: string[][] = [];
  const watch = new ConsulWatch({
    key: "web",
    fetch: script.fetch,
    onSnapshot: (snapshot) => snapshots.push(snapshot),
    onError: (error) => errors.push(error),
    onDropped: (list) => dropped.push(list.map((instance) => instance.id)),
    clock,
    random: () => 0,
    rateLimit: extra.rateLimit ?? { burst: 100, refillPerSecond: 100 },
  });
  watch.start();
  await script.hanging;
  await watch.stop();
  return { snapshots, errors, dropped, sent: script.sent, clock, watch };
}

const addresses = (snapshot: ServiceSnapshot | undefined) => snapshot?.servers.map((server) => server.address);

describe("ConsulWatch, scripted", () => {
  it("sends back the index it got and notifies only when the set changes", async () => {
    const run = await runScript([answer(5, "10.0.0.1"), answer(5, "10.0.0.1"), answer(7, "10.0.0.1"), answer(9, "10.0.0.2", "10.0.0.1")]);
    expect(run.sent).toEqual([0, 5, 5, 7, 9]);
    expect(run.snapshots.map(addresses)).toEqual([["10.0.0.1"], ["10.0.0.1", "10.0.0.2"]]);
    expect(run.errors).toEqual([]);
  });

  it("ignores a same-index return even when its body differs (no change per Consul)", async () => {
    const run = await runScript([answer(5, "10.0.0.1"), answer(5, "10.0.0.9")]);
    expect(run.snapshots.map(addresses)).toEqual([["10.0.0.1"]]);
  });

  it("restarts at 0 when the index goes backwards, and takes that answer's data", async () => {
    const run = await runScript([answer(50, "10.0.0.1"), answer(3, "10.0.0.2"), answer(3, "10.0.0.2"), answer(4, "10.0.0.2")]);
    expect(run.sent).toEqual([0, 50, 0, 3, 4]);
    expect(run.snapshots.map(addresses)).toEqual([["10.0.0.1"], ["10.0.0.2"]]);
  });

  it("never sends index 0 twice in a row when Consul answers 0", async () => {
    const run = await runScript([answer(0, "10.0.0.1"), answer(0, "10.0.0.1"), answer(0, "10.0.0.1")]);
    expect(run.sent).toEqual([0, 1, 1, 1]);
  });

  it("reports errors, backs off exponentially, keeps the last snapshot, and recovers", async () => {
    const run = await runScript([answer(5, "10.0.0.1"), new Error("500"), new Error("500"), new Error("refused"), answer(5, "10.0.0.1"), new Error("again"), answer(8)]);
    expect(run.errors.map((error) => error.message)).toEqual(["500", "500", "refused", "again"]);
    expect(run.clock.sleeps).toEqual([125, 250, 500, 125]);
    expect(run.sent).toEqual([0, 5, 5, 5, 5, 5, 5, 8]);
    expect(run.snapshots.map(addresses)).toEqual([["10.0.0.1"], []]);
  });

  it("keeps going after a hundred errors in a row, with the delay capped", async () => {
    const errors = Array.from({ length: 100 }, (_, i) => new Error(`e${i}`));
    const run = await runScript([...errors, answer(2, "10.0.0.1")]);
    expect(run.errors).toHaveLength(100);
    expect(Math.max(...run.clock.sleeps)).toBe(15_000);
    expect(run.snapshots.map(addresses)).toEqual([["10.0.0.1"]]);
  });

  it("waits for the token bucket before a query once the burst is spent", async () => {
    const run = await runScript([answer(1, "10.0.0.1"), answer(2, "10.0.0.2"), answer(3, "10.0.0.3"), answer(4, "10.0.0.4")], { rateLimit: { burst: 2, refillPerSecond: 2 } });
    expect(run.clock.sleeps).toEqual([500, 500, 500]);
    expect(run.sent).toEqual([0, 1, 2, 3, 4]);
  });

  it("tells about dropped instances when they change, even when the set does not", async () => {
    const bad = (index: number, port: unknown): HealthAnswer => ({ index, instances: [{ id: "good", address: "10.0.0.1", port: 80 }, { id: "bad", address: "10.0.0.2", port }], dropped: [] });
    const run = await runScript([bad(1, "x"), bad(2, "x"), bad(3, 70000), answer(4, "10.0.0.1")]);
    expect(run.snapshots).toHaveLength(1);
    expect(run.dropped).toEqual([["bad"], ["bad"], []]);
    expect(run.watch.snapshot?.dropped).toEqual([]);
  });

  it("survives a listener that throws", async () => {
    const clock = new FakeClock();
    const script = scripted([answer(1, "10.0.0.1"), answer(2, "10.0.0.2")]);
    let calls = 0;
    const watch = new ConsulWatch({
      key: "web",
      fetch: script.fetch,
      onSnapshot: () => {
        calls += 1;
        throw new Error("listener bug");
      },
      onError: () => undefined,
      clock,
    });
    watch.start();
    await script.hanging;
    await watch.stop();
    expect(calls).toBe(2);
  });

  it("stops promptly with a query in flight, and reports no error for it", async () => {
    const run = await runScript([answer(1, "10.0.0.1")]);
    expect(run.errors).toEqual([]);
    expect(run.sent).toEqual([0, 1]);
  });
});
