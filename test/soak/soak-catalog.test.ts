import { describe, expect, it } from "vitest";
import { SoakCatalog, type ConsulOperation } from "./soak-catalog.js";

// The soak counts an event as landed when HAProxy shows the catalog after it: an event that
// changed nothing would land at once and count for nothing, so every one must change the view.

const SHAPE = { services: ["web-0", "web-1", "web-2"], upstreamPorts: [8001, 8002, 8003, 8004, 8005, 8006, 8007, 8008, 8009, 8010], initialServing: 3, minServing: 2, maxServing: 8 };
const SLOTS = 4;

describe("the soak's catalog", () => {
  it("changes what HAProxy must serve at every event, within min and max, across the slot count both ways", () => {
    const catalog = new SoakCatalog(SHAPE);
    const initial = catalog.initial();
    expect(initial.filter((operation) => operation.kind === "register")).toHaveLength(SHAPE.services.length * SHAPE.initialServing);
    const kinds = new Set<string>();
    for (const service of SHAPE.services) {
      const sizes: number[] = [];
      for (let step = 0; step < 300; step += 1) {
        const before = catalog.expected(service);
        const operation = catalog.next(service);
        const after = catalog.expected(service);
        expect(operation.service).toBe(service);
        expect(after, `${service} step ${step}: ${JSON.stringify(operation)}`).not.toEqual(before);
        kinds.add(kindOf(operation, before, after));
        sizes.push(after.length);
      }
      expect(Math.min(...sizes)).toBe(SHAPE.minServing);
      expect(Math.max(...sizes)).toBe(SHAPE.maxServing);
      expect(sizes.some((size, index) => index > 0 && sizes[index - 1]! <= SLOTS && size > SLOTS)).toBe(true);
      expect(sizes.some((size, index) => index > 0 && sizes[index - 1]! > SLOTS && size <= SLOTS)).toBe(true);
    }
    expect([...kinds].sort()).toEqual(["deregister", "fail", "pass", "register", "weight"]);
  });

  it("replays: the same shape gives the same events", () => {
    const run = () => {
      const catalog = new SoakCatalog(SHAPE);
      return [...catalog.initial(), ...Array.from({ length: 100 }, (_, step) => catalog.next(SHAPE.services[step % 3]!))];
    };
    expect(run()).toEqual(run());
  });

  it("refuses a shape that cannot keep every event a change", () => {
    expect(() => new SoakCatalog({ ...SHAPE, maxServing: 10 })).toThrow(/maxServing < upstreams/);
    expect(() => new SoakCatalog({ ...SHAPE, minServing: 1, initialServing: 1 })).toThrow(/2 <= minServing/);
  });
});

/** A register of an instance already served is a weight change. */
function kindOf(operation: ConsulOperation, before: readonly string[], after: readonly string[]): string {
  return operation.kind === "register" && after.length === before.length ? "weight" : operation.kind;
}
