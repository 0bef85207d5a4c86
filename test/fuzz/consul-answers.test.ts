import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ConsulAnswerError, parseConsulIndex, parseHealthAnswer, type AnswerOptions } from "../../controller/discovery/consul/consul-response.js";
import { toServers } from "../../controller/discovery/service-snapshot.js";
import { expectServable, garbage, hostileJson, hostileValue, mutatedJson, mutatedText, outcome } from "./support.js";

/*
 * Consul's answers to `GET /v1/health/service/:service`, and its X-Consul-Index header, as the
 * watch reads them: an answer is refused whole with ConsulAnswerError, or every entry ends up
 * exactly once as a server, a dropped instance with its reason, or an unhealthy one; and the
 * servers are all the Runtime API may take.
 */

const SERVICE = "web";

function entry(id: string, service: Record<string, unknown> = {}, statuses: string[] = ["passing"], node: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    Node: { ID: "n", Node: "node-a", Address: "10.1.0.1", Datacenter: "dc1", TaggedAddresses: {}, Meta: {}, ...node },
    Service: { ID: id, Service: SERVICE, Tags: ["eu"], Address: "10.0.0.1", Meta: {}, Port: 8080, Weights: { Passing: 10, Warning: 1 }, ...service },
    Checks: [
      { Node: "node-a", CheckID: "serfHealth", Status: "passing" },
      ...statuses.map((Status, i) => ({ Node: "node-a", CheckID: `service:${id}:${i}`, Status })),
    ],
  };
}

/** A healthy answer of each kind of entry: own address, the node's, a meta weight, IPv6, a warning. */
const VALID = [
  entry("a"),
  entry("b", { Address: "", Port: 9090 }, ["passing"], { Address: "10.1.0.2" }),
  entry("c", { Address: "10.0.0.3", Meta: { "hafleet-weight": "50" } }),
  entry("d", { Address: "2001:db8::3", Weights: { Passing: 1000, Warning: 3 } }),
  entry("e", { Address: "10.0.0.5" }, ["warning"]),
];

const OPTIONS = fc.record({
  service: fc.constantFrom(SERVICE, "WEB"),
  healthy: fc.constantFrom("passing" as const, "passing-or-warning" as const),
  weights: fc.constantFrom("meta" as const, "consul" as const),
});

/** Reads an answer the way the watch does: parse, then validate each instance. */
function judgeAnswer(body: string, options: AnswerOptions): void {
  const answer = outcome(() => parseHealthAnswer(body, options), ConsulAnswerError);
  if (!answer.ok) return;
  const entries = JSON.parse(body) as unknown[];
  const { instances, dropped, unhealthy } = answer.value;
  expect(instances.length + dropped.length + unhealthy).toBe(entries.length);
  const validated = toServers(instances);
  expect(validated.servers.length + validated.dropped.length).toBe(instances.length);
  for (const drop of [...dropped, ...validated.dropped]) {
    expect(typeof drop.id === "string" && typeof drop.reason === "string" && drop.reason !== "", JSON.stringify(drop)).toBe(true);
  }
  expectServable(validated.servers);
}

describe("parseHealthAnswer, then toServers", () => {
  it("refuses any text that is not an array of objects with ConsulAnswerError, or accounts for every entry", () => {
    const body = fc.oneof(garbage(JSON.stringify(VALID)), mutatedText(fc.constant(JSON.stringify(VALID, null, 1))));
    fc.assert(fc.property(body, OPTIONS, judgeAnswer), { seed: 0xc0501, numRuns: 500 });
  });

  it("does the same for any JSON value", () => {
    const body = fc.oneof(fc.jsonValue({ maxDepth: 4 }), fc.array(fc.jsonValue({ maxDepth: 3 }), { maxLength: 5 })).map((value) => JSON.stringify(value));
    fc.assert(fc.property(body, OPTIONS, judgeAnswer), { seed: 0xc0502, numRuns: 500 });
  });

  it("passes on only servable servers from mutations of a valid answer (hostile, dropped, doubled fields)", () => {
    const body = mutatedJson(VALID, 4).map((value) => JSON.stringify(value));
    fc.assert(fc.property(body, OPTIONS, judgeAnswer), { seed: 0xc0503, numRuns: 500 });
  });

  it("drops, with its reason, every instance whose address, port or weight is hostile", () => {
    const hostileEntry = fc.record({
      serviceAddress: fc.oneof(hostileJson, fc.constantFrom("10.0.0.1;", "10.0.0.1\nset server", "10.0.0.1 port 4444", " 10.0.0.1")),
      nodeAddress: fc.oneof(hostileJson, fc.constant("10.1.0.9")),
      port: fc.oneof(hostileJson, fc.constantFrom(0, -1, 65536, 2 ** 32 + 80, 80.5, "80", 1e21)),
      meta: fc.oneof(fc.constant({}), hostileJson.map((weight) => ({ "hafleet-weight": weight })), fc.constantFrom({ "hafleet-weight": "-1" }, { "hafleet-weight": "257" }, { "hafleet-weight": "9".repeat(400) })),
      weights: fc.oneof(hostileJson, fc.record({ Passing: hostileJson, Warning: hostileJson }), fc.constantFrom({ Passing: -5, Warning: 1 }, { Passing: 1e308, Warning: 1 }, { Passing: 1.5, Warning: 1 })),
    });
    const answer = fc.array(fc.tuple(hostileEntry, hostileValue), { minLength: 1, maxLength: 6 }).map((entries) =>
      entries.map(([fields, id], i) => entry(`${i}-${id}`, { Address: fields.serviceAddress, Port: fields.port, Meta: fields.meta, Weights: fields.weights }, ["passing"], { Address: fields.nodeAddress })),
    );
    fc.assert(
      fc.property(answer, OPTIONS, (entries, options) => judgeAnswer(JSON.stringify(entries), options)),
      { seed: 0xc0504, numRuns: 500 },
    );
  });

  it("never passes on an instance of another service or with a failing check", () => {
    const status = fc.constantFrom("passing", "warning", "critical");
    const answer = fc.array(fc.record({ service: fc.constantFrom(SERVICE, "Web", "web2", "", "web "), statuses: fc.array(status, { maxLength: 3 }) }), { maxLength: 8 });
    fc.assert(
      fc.property(answer, OPTIONS, (specs, options) => {
        const entries = specs.map(({ service, statuses }, i) => entry(`i${i}`, { Service: service, Address: `10.0.0.${i + 1}` }, statuses));
        const { instances } = parseHealthAnswer(JSON.stringify(entries), options);
        for (const instance of instances) {
          const spec = specs[Number(instance.id.slice("node-a/i".length))]!;
          expect(spec.service.toLowerCase()).toBe(SERVICE);
          expect(spec.statuses).not.toContain("critical");
          if (options.healthy === "passing") expect(spec.statuses).not.toContain("warning");
        }
      }),
      { seed: 0xc0505, numRuns: 500 },
    );
  });
});

describe("parseConsulIndex", () => {
  it("refuses anything but a decimal uint up to 2^53 with ConsulAnswerError, and reads that exactly", () => {
    const header = fc.oneof(
      fc.constant(undefined),
      garbage("0123456789,- e.x", 30),
      fc.bigInt({ min: 0n, max: 2n ** 64n }).map(String),
      fc.array(fc.nat().map(String), { maxLength: 3 }),
    );
    fc.assert(
      fc.property(header, (value) => {
        const result = outcome(() => parseConsulIndex(value, SERVICE), ConsulAnswerError);
        if (!result.ok) return;
        expect(Number.isSafeInteger(result.value) && result.value >= 0).toBe(true);
        expect(BigInt(result.value)).toBe(BigInt(typeof value === "string" ? value : (value ?? []).join(",")));
      }),
      { seed: 0x1de8, numRuns: 1_000 },
    );
  });
});
