import { describe, expect, it } from "vitest";
import { trend, type MemorySample } from "./memory.js";

const sample = (events: number, heapKb: number): MemorySample => ({ atMs: events, events, processes: { agent: { rssKb: 100_000, heapKb } } });

describe("the soak's memory trend", () => {
  it("gives a steady growth as its slope per 1,000 events, through every sample and through the floors", () => {
    const samples = Array.from({ length: 50 }, (_, index) => sample(index * 100, 20_000 + index * 100 * 3));
    expect(trend(samples, "agent", "heapKb", 0)).toEqual({ start: 20_000, end: 34_700, max: 34_700, kbPer1000Events: 3_000, floorKbPer1000Events: 3_000 });
  });

  it("sees a garbage-collected sawtooth on a flat floor as flat there, and only after the warm-up", () => {
    // Climbs 8 MB between collections, back to 20 MB each time; before event 1,000 it grew.
    const samples = Array.from({ length: 200 }, (_, index) => sample(index * 50, index < 20 ? 10_000 + index * 500 : 20_000 + ((index - 20) % 17) * 500));
    const flat = trend(samples, "agent", "heapKb", 1_000)!;
    expect(flat.start).toBe(20_000);
    expect(flat.max).toBe(28_000);
    expect(flat.floorKbPer1000Events).toBe(0);
    expect(trend(samples, "agent", "heapKb", 0)!.floorKbPer1000Events).toBeGreaterThan(500);
  });

  it("has no trend for a reading a process lacks, or with fewer than two samples", () => {
    expect(trend([sample(0, 1), sample(100, 2)], "haproxy", "heapKb", 0)).toBeNull();
    expect(trend([sample(0, 1)], "agent", "heapKb", 0)).toBeNull();
  });
});
