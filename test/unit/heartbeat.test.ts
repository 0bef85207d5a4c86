import { describe, expect, it } from "vitest";
import { heartbeatDue } from "../../proto/heartbeat.js";

describe("heartbeatDue", () => {
  it("is due on a stream quiet for half a period or more", () => {
    expect(heartbeatDue(0, 5_000, 5_000)).toBe(true);
    expect(heartbeatDue(1_000, 3_500, 5_000)).toBe(true);
  });

  it("is not due just after another message: that message proved the sender alive", () => {
    expect(heartbeatDue(1_000, 3_499, 5_000)).toBe(false);
  });

  it("ticking every period, skips at most one tick, so silence stays under 1.5 periods", () => {
    const period = 5_000;
    // A heartbeat written 1 ms after its tick: the next tick finds a period less 1 ms of silence.
    let lastSent = 1;
    let longest = 0;
    for (let tick = period; tick <= 6 * period; tick += period) {
      if (heartbeatDue(lastSent, tick, period)) {
        longest = Math.max(longest, tick - lastSent);
        lastSent = tick;
      }
    }
    expect(longest).toBeLessThan(1.5 * period);
  });
});
