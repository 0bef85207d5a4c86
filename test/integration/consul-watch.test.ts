import http from "node:http";
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import type { ServiceSnapshot, SnapshotListener } from "../../controller/discovery/service-snapshot.js";
import { ConsulClient, ConsulConnectError, ConsulHttpError, ConsulTimeoutError } from "../../controller/discovery/consul/consul-client.js";
import { ConsulAnswerError } from "../../controller/discovery/consul/consul-response.js";
import { ConsulSource, ConsulSourceClosedError, type ConsulSourceOptions } from "../../controller/discovery/consul/consul-source.js";
import { InvalidInputError } from "../../agent/errors.js";
import { AgentApi, instance, startConsulEmulator, type ConsulEmulator, type ConsulEmulatorOptions } from "../consul-emulator/consul-emulator.js";

let consul: ConsulEmulator | undefined;
let source: ConsulSource | undefined;
afterEach(async () => {
  await source?.close();
  await consul?.close();
  source = consul = undefined;
});

interface LogLine {
  level: number;
  msg: string;
  service?: string;
  instance?: string;
  reason?: string;
}

async function setup(options: Partial<ConsulSourceOptions> = {}, emulatorOptions: ConsulEmulatorOptions = {}) {
  consul = await startConsulEmulator(emulatorOptions);
  const logs: LogLine[] = [];
  const logger = pino({ level: "debug" }, { write: (line: string) => logs.push(JSON.parse(line) as LogLine) });
  source = new ConsulSource({
    address: consul.url,
    wait: 5000,
    backoff: { initialMs: 20, maxMs: 200 },
    rateLimit: { burst: 2, refillPerSecond: 20 },
    logger,
    ...options,
  });
  const api = new AgentApi(consul.url, emulatorOptions.token);
  return { consul, source, api, logs };
}

/** Records what a listener hears, and waits for what a test expects to hear. */
class Recorder implements SnapshotListener {
  readonly snapshots: ServiceSnapshot[] = [];
  readonly errors: Error[] = [];
  private wake: (() => void) | null = null;

  snapshot(snapshot: ServiceSnapshot): void {
    this.snapshots.push(snapshot);
    this.wake?.();
  }

  error(_key: string, error: Error): void {
    this.errors.push(error);
    this.wake?.();
  }

  get last(): ServiceSnapshot | undefined {
    return this.snapshots[this.snapshots.length - 1];
  }

  /** Resolves once `condition` holds; fails the test after `timeoutMs`. */
  async until(condition: (recorder: Recorder) => boolean, timeoutMs = 3000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition(this)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`not heard in ${timeoutMs} ms; snapshots: ${JSON.stringify(this.snapshots.map(endpoints))}, errors: ${this.errors.map((error) => error.message).join(" | ")}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 50));
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }
}

function endpoints(snapshot: ServiceSnapshot | undefined): string[] {
  return (snapshot?.servers ?? []).map((server) => `${server.address}:${server.port}${server.weight === undefined ? "" : `/${server.weight}`}`);
}

const has = (...expected: string[]) => (recorder: Recorder) => JSON.stringify(endpoints(recorder.last)) === JSON.stringify(expected);

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The usual start: instance `a` of `web` registered, watched, its answer in, the next query held. */
async function watchingOneInstance(options?: Parameters<typeof setup>[0]) {
  const context = await setup(options);
  await context.api.register(instance("a", "web", "10.0.0.1", 80));
  const recorder = new Recorder();
  context.source.watch("web", null, recorder);
  await recorder.until(has("10.0.0.1:80"));
  await settle(context.consul, 1);
  return { ...context, recorder };
}

async function settle(consul: ConsulEmulator, held: number): Promise<void> {
  const deadline = Date.now() + 3000;
  while (consul.heldQueries !== held) {
    if (Date.now() > deadline) throw new Error(`expected ${held} held queries, have ${consul.heldQueries}`);
    await sleep(5);
  }
}

/** A Consul answer written by hand: what a hostile or broken server might send. */
function rawEntry(id: string, address: unknown, port: unknown, meta: Record<string, string> = {}): Record<string, unknown> {
  return {
    Node: { Node: "n1", Address: "10.1.0.1" },
    Service: { ID: id, Service: "web", Address: address, Port: port, Meta: meta, Tags: [], Weights: { Passing: 1, Warning: 1 } },
    Checks: [{ CheckID: "serfHealth", Status: "passing" }],
  };
}

describe("ConsulSource against the emulator: what the watch sees", () => {
  it("turns registered instances into a snapshot, weights from meta, the node's address when the service has none", async () => {
    const { source, api } = await setup({}, { nodeAddress: "10.9.0.1" });
    await api.register(instance("web-1", "web", "10.0.0.2", 8080, { Meta: { "hafleet-weight": "20" } }));
    await api.register(instance("web-2", "web", "", 8081));
    const recorder = new Recorder();

    source.watch("web", null, recorder);

    await recorder.until(has("10.0.0.2:8080/20", "10.9.0.1:8081"));
    expect(recorder.snapshots).toHaveLength(1);
    expect(recorder.last).toMatchObject({ key: "web", dropped: [] });
    expect(recorder.errors).toEqual([]);
  });

  it("follows checks: a failing, warning or maintenance instance leaves, a passing one comes back", async () => {
    const { source, api } = await setup();
    await api.register(instance("a", "web", "10.0.0.1", 80));
    await api.register(instance("b", "web", "10.0.0.2", 80));
    await api.register(instance("c", "web", "10.0.0.3", 80));
    const recorder = new Recorder();
    source.watch("web", null, recorder);
    await recorder.until(has("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"));

    await api.fail("service:a");
    await recorder.until(has("10.0.0.2:80", "10.0.0.3:80"));
    await api.warn("service:b");
    await recorder.until(has("10.0.0.3:80"));
    await api.maintenance("c", true, "kernel upgrade");
    await recorder.until(has());
    await api.pass("service:a");
    await recorder.until(has("10.0.0.1:80"));
    expect(recorder.errors).toEqual([]);
  });

  it("keeps warning instances under passing-or-warning, weighted by Consul's Weights", async () => {
    const { source, api } = await setup({ healthy: "passing-or-warning", weights: "consul" });
    await api.register(instance("a", "web", "10.0.0.1", 80, { Weights: { Passing: 10, Warning: 2 } }));
    await api.register(instance("b", "web", "10.0.0.2", 80, { Weights: { Passing: 1000, Warning: 1 } }));
    const recorder = new Recorder();
    source.watch("web", null, recorder);
    // Weights above 256 are scaled for the whole answer, so shares stay: 10 and 1000 become 3 and 256.
    await recorder.until(has("10.0.0.1:80/3", "10.0.0.2:80/256"));

    await api.warn("service:a");
    await recorder.until(has("10.0.0.1:80/1", "10.0.0.2:80/256"));
    await api.fail("service:b");
    await recorder.until(has("10.0.0.1:80/2"));
  });

  it("follows deregistration down to an empty service, which is a real snapshot", async () => {
    const { source, api } = await setup();
    await api.register(instance("a", "web", "10.0.0.1", 80));
    const recorder = new Recorder();
    source.watch("web", null, recorder);
    await recorder.until(has("10.0.0.1:80"));

    await api.deregister("a");
    await recorder.until(has());
    expect(recorder.snapshots).toHaveLength(2);
  });

  it("watches a tag: only instances carrying it", async () => {
    const { source, api } = await setup();
    await api.register(instance("a", "web", "10.0.0.1", 80, { Tags: ["primary"] }));
    await api.register(instance("b", "web", "10.0.0.2", 80, { Tags: ["canary"] }));
    const recorder = new Recorder();
    source.watch("web", "primary", recorder);
    await recorder.until(has("10.0.0.1:80"));
    expect(recorder.last?.key).toBe("web#primary");

    await api.register(instance("b", "web", "10.0.0.2", 80, { Tags: ["canary", "primary"] }));
    await recorder.until(has("10.0.0.1:80", "10.0.0.2:80"));
  });
});

describe("ConsulSource against the emulator: blocking, sharing, rate", () => {
  it("blocks instead of polling, and a change arrives promptly", async () => {
    const { consul, api, recorder } = await watchingOneInstance();

    await sleep(500);
    expect(consul.healthQueryCount("web")).toBe(2);

    // The change comes back on the query that was held: one more query, not a poll.
    await api.register(instance("b", "web", "10.0.0.2", 80));
    await recorder.until(has("10.0.0.1:80", "10.0.0.2:80"));
    await settle(consul, 1);
    expect(consul.healthQueryCount("web")).toBe(3);
    const [first, second, third] = consul.queryLog;
    expect(first).toMatchObject({ service: "web", index: null, wait: null, passing: "1", tags: [], consistency: "default", gzip: true });
    expect(second).toMatchObject({ service: "web", index: String(consul.index - 1), wait: "5000ms", passing: "1", tags: [] });
    expect(third?.index).toBe(String(consul.index));
  });

  it("does not notify when Consul returns without a change to the set", async () => {
    const { consul, source, api } = await setup({ wait: 200 });
    await api.register(instance("a", "web", "10.0.0.1", 80));
    const recorder = new Recorder();
    source.watch("web", null, recorder);
    await recorder.until(has("10.0.0.1:80"));

    await api.pass("service:a", "output changed, set did not");
    await api.register(instance("x", "other", "10.0.0.9", 80));
    await sleep(600);

    expect(consul.healthQueryCount("web")).toBeGreaterThanOrEqual(4);
    expect(recorder.snapshots).toHaveLength(1);
  });

  it("shares one watch among listeners of a key; a late one gets the last snapshot at once", async () => {
    const { consul, source, api } = await setup();
    await api.register(instance("a", "web", "10.0.0.1", 80));
    const first = new Recorder();
    const stopFirst = source.watch("web", null, first);
    await first.until(has("10.0.0.1:80"));
    await settle(consul, 1);

    const second = new Recorder();
    const stopSecond = source.watch("web", null, second);
    expect(second.snapshots).toHaveLength(0);
    await second.until(has("10.0.0.1:80"), 100);
    const other = new Recorder();
    const stopOther = source.watch("web", "canary", other);
    await other.until(has());
    await settle(consul, 2);
    expect(consul.healthQueryCount("web")).toBe(4);

    await api.register(instance("b", "web", "10.0.0.2", 80));
    await first.until(has("10.0.0.1:80", "10.0.0.2:80"));
    await second.until(has("10.0.0.1:80", "10.0.0.2:80"));

    stopFirst();
    stopFirst();
    stopOther();
    await settle(consul, 1);
    await api.register(instance("c", "web", "10.0.0.3", 80));
    await second.until(has("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"));
    expect(first.snapshots).toHaveLength(2);

    stopSecond();
    // A query sent as the last listener left may still be on its way: counted once it has arrived and gone.
    await sleep(100);
    await settle(consul, 0);
    const count = consul.healthQueryCount();
    await api.register(instance("d", "web", "10.0.0.4", 80));
    await sleep(200);
    expect(consul.healthQueryCount()).toBe(count);
  });

  it("bounds the query rate of a flapping service with the token bucket, and ends on the final state", async () => {
    const { consul, source, api } = await setup({ rateLimit: { burst: 2, refillPerSecond: 5 } });
    await api.register(instance("a", "web", "10.0.0.1", 80));
    await api.register(instance("b", "web", "10.0.0.2", 80));
    const recorder = new Recorder();
    source.watch("web", null, recorder);
    await recorder.until(has("10.0.0.1:80", "10.0.0.2:80"));
    const before = consul.healthQueryCount("web");

    const started = Date.now();
    let flips = 0;
    while (Date.now() - started < 2000) {
      await (flips % 2 === 0 ? api.fail("service:a") : api.pass("service:a"));
      flips += 1;
      await sleep(5);
    }
    await api.fail("service:a");
    const elapsed = (Date.now() - started) / 1000;

    const queries = consul.healthQueryCount("web") - before;
    expect(flips).toBeGreaterThan(50);
    expect(queries).toBeGreaterThan(3);
    expect(queries).toBeLessThanOrEqual(2 + Math.ceil(elapsed * 5) + 1);
    await recorder.until(has("10.0.0.2:80"));
  });
});

describe("ConsulSource against the emulator: failures", () => {
  it("reports HTTP 500s, keeps the last snapshot, backs off, and recovers", async () => {
    const { consul, api, recorder } = await watchingOneInstance();

    consul.failNext(4, 500, "rpc error making call: No cluster leader");
    await recorder.until((r) => r.errors.length === 4);
    await settle(consul, 1);

    const error = recorder.errors[0] as ConsulHttpError;
    expect(error).toBeInstanceOf(ConsulHttpError);
    expect(error).toMatchObject({ code: "HAFLEET_CONSUL_HTTP", status: 500, bodyStart: "rpc error making call: No cluster leader", service: "web" });
    expect(recorder.snapshots).toHaveLength(1);
    await api.register(instance("b", "web", "10.0.0.2", 80));
    await recorder.until(has("10.0.0.1:80", "10.0.0.2:80"));
    expect(recorder.snapshots.every((snapshot) => snapshot.servers.length > 0)).toBe(true);
  });

  it("never stops retrying while Consul is unreachable", async () => {
    const closed = await closedPort();
    source = new ConsulSource({ address: `http://127.0.0.1:${closed}`, backoff: { initialMs: 10, maxMs: 50 }, rateLimit: { burst: 2, refillPerSecond: 100 } });
    const recorder = new Recorder();
    source.watch("web", null, recorder);

    await recorder.until((r) => r.errors.length >= 8);
    expect(recorder.errors[0]).toBeInstanceOf(ConsulConnectError);
    expect(recorder.errors[0]?.message).toBe(`cannot reach Consul at http://127.0.0.1:${closed}: ECONNREFUSED`);
    expect(recorder.snapshots).toEqual([]);
  });

  it("times out a query Consul holds past wait + wait/16 + the margin, then recovers", async () => {
    const { consul, source, api } = await setup({ wait: 400, timeoutMarginMs: 100 });
    await api.register(instance("a", "web", "10.0.0.1", 80));
    const recorder = new Recorder();
    source.watch("web", null, recorder);
    await recorder.until(has("10.0.0.1:80"));

    consul.delay(2000);
    await recorder.until((r) => r.errors.length >= 1);
    expect(recorder.errors[0]).toBeInstanceOf(ConsulTimeoutError);
    expect(recorder.errors[0]?.message).toBe("Consul did not answer the query for service 'web' within 525 ms");

    consul.delay(0);
    await api.register(instance("b", "web", "10.0.0.2", 80));
    await recorder.until(has("10.0.0.1:80", "10.0.0.2:80"));
    expect(recorder.snapshots).toHaveLength(2);
  });

  it("resets when the index goes backwards, and keeps seeing changes promptly", async () => {
    const { consul, source, api } = await setup();
    for (let i = 1; i <= 5; i++) await api.register(instance(`i${i}`, "web", `10.0.0.${i}`, 80));
    const recorder = new Recorder();
    source.watch("web", null, recorder);
    await recorder.until((r) => endpoints(r.last).length === 5);
    await settle(consul, 1);

    consul.resetIndex(1);
    await settle(consul, 1);
    await api.deregister("i5");

    await recorder.until((r) => endpoints(r.last).length === 4, 1000);
    expect(recorder.errors).toEqual([]);
    // Consul's rule: the index went back, so the loop restarts with index 0 (an immediate answer).
    const sent = consul.queryLog.map((query) => query.index);
    expect(sent.slice(0, 2)).toEqual([null, "10"]);
    expect(sent.slice(2, 4)).toEqual([null, "1"]);
  });

  it("drops hostile instances with their reasons, logs each once, and keeps the good ones", async () => {
    const { consul, source, api, logs } = await setup();
    await api.register(instance("a", "web", "10.0.0.1", 80));
    const recorder = new Recorder();
    source.watch("web", null, recorder);
    await recorder.until(has("10.0.0.1:80"));
    await settle(consul, 1);

    const hostile = [
      rawEntry("good", "10.0.0.7", 8080),
      rawEntry("semicolon", "10.0.0.8;shutdown sessions server be/s1", 80),
      rawEntry("newline", "10.0.0.9\ndisable server be/s1", 80),
      rawEntry("huge-port", "10.0.0.10", 1e12),
      rawEntry("string-port", "10.0.0.11", "80"),
      rawEntry("weight", "10.0.0.12", 80, { "hafleet-weight": "9000" }),
      { ...rawEntry("no-checks", "10.0.0.13", 80), Checks: "none" },
    ];
    consul.respondWith(JSON.stringify(hostile));
    await recorder.until(has("10.0.0.7:8080"));

    expect(recorder.last?.dropped.map((dropped) => dropped.id)).toEqual(["n1/no-checks", "n1/semicolon", "n1/newline", "n1/huge-port", "n1/string-port", "n1/weight"]);
    expect(recorder.last?.dropped[1]?.reason).toBe('address: must be an IPv4 or IPv6 literal (got "10.0.0.8;shutdown sessions server be/s1")');
    const droppedLogs = logs.filter((line) => line.msg === "instance dropped");
    expect(droppedLogs).toHaveLength(6);
    expect(droppedLogs[3]).toMatchObject({ service: "web", instance: "n1/huge-port", reason: "port: must be between 1 and 65535 (got 1000000000000)" });
    expect(recorder.errors).toEqual([]);
  });

  it("refresh() reads again at once, so a bogus answer that came with a valid index is not kept", async () => {
    const { consul, source, api, recorder } = await watchingOneInstance({ wait: 300_000 });

    await api.register(instance("b", "web", "10.0.0.2", 80));
    await recorder.until(has("10.0.0.1:80", "10.0.0.2:80"));
    await settle(consul, 1);
    // A bogus empty answer with a fresh index; nothing changes in Consul after it, so the
    // watch, blocking at that index, would wait for the next change to learn the truth.
    consul.respondWith("[]", { times: 1, service: "web" });
    await recorder.until((r) => r.last?.servers.length === 0);
    await settle(consul, 1);

    source.refresh("web", null);
    await recorder.until(has("10.0.0.1:80", "10.0.0.2:80"));
    expect(recorder.errors).toEqual([]);
  });

  it("takes truncated JSON, a cut connection or a bad index as an error and keeps the last good snapshot", async () => {
    const { consul, api, recorder } = await watchingOneInstance();

    const body = JSON.stringify([rawEntry("x", "10.0.0.2", 80)]);
    consul.respondWith(body.slice(0, body.length - 3));
    await recorder.until((r) => r.errors.length === 1);
    consul.respondWith(body, { cutAfter: 20 });
    await recorder.until((r) => r.errors.length === 2);
    consul.respondWith(body, { index: null });
    await recorder.until((r) => r.errors.length === 3);
    consul.respondWith(body, { index: "12abc" });
    await recorder.until((r) => r.errors.length === 4);

    expect(recorder.errors.map((error) => error.constructor.name)).toEqual(["ConsulAnswerError", "ConsulConnectError", "ConsulAnswerError", "ConsulAnswerError"]);
    expect(recorder.errors[0]?.message).toMatch(/^Consul's answer for service 'web' is unusable: not valid JSON/);
    expect(recorder.errors[2]?.message).toBe("Consul's answer for service 'web' is unusable: no X-Consul-Index header");
    expect(recorder.errors[3]?.message).toBe(`Consul's answer for service 'web' is unusable: X-Consul-Index is not a number: "12abc"`);
    expect(recorder.snapshots.map(endpoints)).toEqual([["10.0.0.1:80"]]);
    await api.register(instance("b", "web", "10.0.0.2", 80));
    await recorder.until(has("10.0.0.1:80", "10.0.0.2:80"));
  });

  it("refuses a body over the limit, announced or chunked, and reads a 10 MB one under the default", async () => {
    // Over the limit is a configuration problem, retried at configurationRetryMs: short here.
    const { consul, recorder } = await watchingOneInstance({ maxBodyBytes: 1024 * 1024, configurationRetryMs: 50 });

    const big = JSON.stringify([{ ...rawEntry("big", "10.0.0.5", 80), Padding: "x".repeat(10 * 1024 * 1024) }]);
    consul.respondWith(big);
    await recorder.until((r) => r.errors.length === 1);
    consul.respondWith(big, { chunked: true });
    await recorder.until((r) => r.errors.length === 2);
    expect(recorder.errors[0]?.message).toMatch(/body of 10485\d+ bytes is over the 1048576-byte limit/);
    expect(recorder.errors[1]?.message).toMatch(/body is over the 1048576-byte limit/);
    expect(recorder.snapshots).toHaveLength(1);

    const client = new ConsulClient({ address: consul.url, healthy: "passing", weights: "meta", waitMs: 1000 });
    consul.respondWith(big, { chunked: true });
    const answer = await client.healthService({ service: "web", tag: null, index: 0 });
    expect(answer.instances).toEqual([{ id: "n1/big", address: "10.0.0.5", port: 80 }]);
  });

  it("quotes only the start of a large error page", async () => {
    const { consul } = await setup();
    const client = new ConsulClient({ address: consul.url, healthy: "passing", weights: "meta", waitMs: 1000 });
    consul.failNext(1, 502, `<html>${"bad gateway ".repeat(50_000)}</html>`);
    const error = await client.healthService({ service: "web", tag: null, index: 0 }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ConsulHttpError);
    expect((error as ConsulHttpError).status).toBe(502);
    expect((error as ConsulHttpError).bodyStart).toHaveLength(512);
    expect((error as ConsulHttpError).message.length).toBeLessThan(400);
  });

  it("reports a foreign datacenter as Consul's own error", async () => {
    const { source } = await setup({ datacenter: "eu-west" });
    const recorder = new Recorder();
    source.watch("web", null, recorder);
    await recorder.until((r) => r.errors.length >= 1);
    expect(recorder.errors[0]).toMatchObject({ status: 500, bodyStart: "No path to datacenter" });
  });
});

describe("ConsulSource against the emulator: ACL tokens", () => {
  it("sends the token, and reports 'ACL not found' for a wrong one", async () => {
    const { consul, api } = await setup({}, { token: "s3cr3t" });
    await api.register(instance("a", "web", "10.0.0.1", 80));

    source = new ConsulSource({ address: consul.url, token: "wrong", backoff: { initialMs: 10, maxMs: 50 } });
    const refused = new Recorder();
    source.watch("web", null, refused);
    await refused.until((r) => r.errors.length >= 1);
    expect(refused.errors[0]).toMatchObject({ status: 403, bodyStart: "ACL not found" });
    await source.close();

    source = new ConsulSource({ address: consul.url, token: "s3cr3t" });
    const allowed = new Recorder();
    source.watch("web", null, allowed);
    await allowed.until(has("10.0.0.1:80"));
  });

  it("refuses results filtered by ACLs instead of taking a partial set for the truth", async () => {
    const { consul, api } = await setup({}, { token: "s3cr3t", readTokens: { "reads-api-only": ["api"] } });
    await api.register(instance("a", "web", "10.0.0.1", 80));

    source = new ConsulSource({ address: consul.url, token: "reads-api-only", backoff: { initialMs: 10, maxMs: 50 } });
    const recorder = new Recorder();
    source.watch("web", null, recorder);
    await recorder.until((r) => r.errors.length >= 1);
    expect(recorder.errors[0]).toBeInstanceOf(ConsulAnswerError);
    expect(recorder.errors[0]?.message).toMatch(/results filtered by ACLs/);
    expect(recorder.snapshots).toEqual([]);
  });
});

describe("ConsulSource: lifecycle", () => {
  it("close() aborts the blocking query in flight at once, and refuses new watches", async () => {
    const { consul, source, recorder } = await watchingOneInstance({ wait: 300_000 });

    // With a 5-minute wait, close() returning at all means the held query was aborted.
    await source.close();
    await settle(consul, 0);
    expect(recorder.errors).toEqual([]);
    expect(() => source.watch("web", null, new Recorder())).toThrow(ConsulSourceClosedError);
  });

  it("keeps serving the other listeners when one throws", async () => {
    const { source, api } = await setup();
    await api.register(instance("a", "web", "10.0.0.1", 80));
    source.watch("web", null, {
      snapshot: () => {
        throw new Error("listener bug");
      },
      error: () => undefined,
    });
    const recorder = new Recorder();
    source.watch("web", null, recorder);
    await recorder.until(has("10.0.0.1:80"));
    await api.register(instance("b", "web", "10.0.0.2", 80));
    await recorder.until(has("10.0.0.1:80", "10.0.0.2:80"));
  });

  it("refuses bad options with every problem named", () => {
    const error = (() => {
      try {
        new ConsulSource({ address: "consul:8500", wait: 11 * 60_000, rateLimit: { burst: 0 } });
      } catch (caught) {
        return caught;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(InvalidInputError);
    expect((error as InvalidInputError).issues.map((issue) => issue.path)).toEqual(["address", "wait", "rateLimit.burst"]);
  });
});

/** A port nothing listens on: bound, then closed. */
async function closedPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
