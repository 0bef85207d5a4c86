import { describe, expect, it } from "vitest";
import {
  acquired,
  acquireDeferred,
  acquireRefused,
  acquireRetryMs,
  initialState,
  isLeading,
  keyRead,
  leaseEnd,
  renewDueAt,
  requestTimeoutMs,
  retryDelayMs,
  sameView,
  sessionConfirmed,
  sessionLost,
  shouldAcquire,
  viewOf,
  type LeadershipState,
  type Timing,
} from "../../controller/leadership/leadership-state.js";

interface Data {
  wave: number;
}

const TTL = 15_000;
const TIMING: Timing = { sessionTtlMs: TTL, lockDelayMs: 15_000 };
const T0 = 1_000_000;
const SELF = { id: "ctl-1", url: "https://ctl-1:7901" };
const OTHER = { id: "ctl-2" };

/** This replica with a session confirmed at T0 and the key read as `holder` left it. */
function state(holder: "self" | "other" | null, data: Data | null = { wave: 2 }): LeadershipState<Data> {
  const withSession = sessionConfirmed(initialState<Data>(), "own-session", T0);
  const key = holder === null ? { holder: null, leader: OTHER, data } : holder === "self" ? { holder: "own-session", leader: SELF, data } : { holder: "other-session", leader: OTHER, data };
  return keyRead(withSession, key);
}

describe("the lease: leading only while Consul cannot yet have expired the session", () => {
  it("runs from when the confirming request was sent, and ends a tenth of the TTL before Consul's earliest expiry", () => {
    const leading = state("self");

    expect(leaseEnd(leading.session!, TTL)).toBe(T0 + 13_500);
    expect(isLeading(leading, TTL, T0)).toBe(true);
    expect(isLeading(leading, TTL, T0 + 13_499)).toBe(true);
    expect(isLeading(leading, TTL, T0 + 13_500)).toBe(false);
    // A renewal sent later moves the lease; the answer's arrival does not count.
    expect(isLeading(sessionConfirmed(leading, "own-session", T0 + 7_500), TTL, T0 + 20_999)).toBe(true);
  });

  it("needs the session, the key read, and the key held by this very session", () => {
    expect(isLeading(initialState<Data>(), TTL, T0)).toBe(false);
    expect(isLeading(sessionConfirmed(initialState<Data>(), "own-session", T0), TTL, T0)).toBe(false);
    expect(isLeading(state("other"), TTL, T0)).toBe(false);
    expect(isLeading(state(null), TTL, T0)).toBe(false);
    expect(isLeading(sessionLost(state("self")), TTL, T0)).toBe(false);
  });

  it("renews at half the TTL, and a renewal that times out still leaves time for a retry within the lease", () => {
    for (const ttl of [1_000, 2_000, 10_000, 15_000, 60_000]) {
      const lease = { id: "s", confirmedAt: T0 };
      expect(renewDueAt(lease, ttl)).toBe(T0 + ttl / 2);
      expect(renewDueAt(lease, ttl) + requestTimeoutMs(ttl)).toBeLessThan(leaseEnd(lease, ttl));
    }
  });

  it("retries failed requests quickly at first and never further apart than a quarter TTL", () => {
    expect(retryDelayMs(1, TTL, () => 0)).toBe(375);
    expect(retryDelayMs(1, TTL, () => 1)).toBe(750);
    expect(retryDelayMs(30, TTL, () => 1)).toBe(3_750);
    expect(retryDelayMs(30, TTL, () => 0)).toBe(1_875);
  });
});

describe("the view", () => {
  it("names the holder's leader and the key's data; nobody when the key is free", () => {
    expect(viewOf(state("self"), SELF, TTL, T0)).toEqual({ leading: true, leader: SELF, data: { wave: 2 } });
    expect(viewOf(state("other"), SELF, TTL, T0)).toEqual({ leading: false, leader: OTHER, data: { wave: 2 } });
    expect(viewOf(state(null), SELF, TTL, T0)).toEqual({ leading: false, leader: null, data: { wave: 2 } });
    expect(viewOf(initialState<Data>(), SELF, TTL, T0)).toEqual({ leading: false, leader: null, data: null });
  });

  it("names this replica while it leads, whatever the value says", () => {
    const misnamed = keyRead(state("self"), { holder: "own-session", leader: OTHER, data: null });
    expect(viewOf(misnamed, SELF, TTL, T0)).toEqual({ leading: true, leader: SELF, data: null });
  });

  it("names nobody once this replica's own lease has run out: Consul may have handed the key on", () => {
    expect(viewOf(state("self"), SELF, TTL, T0 + 13_500)).toEqual({ leading: false, leader: null, data: { wave: 2 } });
  });

  it("compares views by value", () => {
    expect(sameView(viewOf(state("other"), SELF, TTL, T0), viewOf(state("other"), SELF, TTL, T0 + 1))).toBe(true);
    expect(sameView(viewOf(state("other"), SELF, TTL, T0), viewOf(state("other", { wave: 3 }), SELF, TTL, T0))).toBe(false);
    expect(sameView(viewOf(state("self"), SELF, TTL, T0), viewOf(state("self"), SELF, TTL, T0 + 13_500))).toBe(false);
  });
});

describe("what to do next", () => {
  it("tries for the lock only with a session, once the key was read, while it is free and no refusal stands", () => {
    expect(shouldAcquire(state(null), T0)).toBe(true);
    expect(shouldAcquire(state("other"), T0)).toBe(false);
    expect(shouldAcquire(state("self"), T0)).toBe(false);
    expect(shouldAcquire(sessionConfirmed(initialState<Data>(), "own-session", T0), T0)).toBe(false);
    expect(shouldAcquire(keyRead(initialState<Data>(), { holder: null, leader: null, data: null }), T0)).toBe(false);

    const refused = acquireRefused(state(null), "own-session", T0, TIMING);
    expect(shouldAcquire(refused, T0 + acquireRetryMs(TIMING) - 1)).toBe(false);
    expect(shouldAcquire(refused, T0 + acquireRetryMs(TIMING))).toBe(true);
    expect(shouldAcquire(acquireDeferred(state(null), T0, TIMING), T0)).toBe(false);
  });

  it("polls a lock-delay a few times per delay, at least every 5 s and at most every 100 ms", () => {
    expect(acquireRetryMs({ sessionTtlMs: TTL, lockDelayMs: 15_000 })).toBe(3_750);
    expect(acquireRetryMs({ sessionTtlMs: TTL, lockDelayMs: 60_000 })).toBe(5_000);
    expect(acquireRetryMs({ sessionTtlMs: TTL, lockDelayMs: 0 })).toBe(100);
  });
});

describe("transitions", () => {
  it("an acquire won leaves the key holding what was sent, under our session", () => {
    const won = acquired(state(null, { wave: 4 }), "own-session", SELF, { wave: 4 });
    expect(won.key).toEqual({ holder: "own-session", leader: SELF, data: { wave: 4 } });
    expect(isLeading(won, TTL, T0)).toBe(true);
  });

  it("an acquire answered for a session since replaced changes nothing", () => {
    const before = state(null);
    expect(acquired(before, "old-session", SELF, { wave: 9 })).toBe(before);
  });

  it("a refused write by the holder ends its leading and forgets who holds the key until the next read", () => {
    const refused = acquireRefused(state("self"), "own-session", T0, TIMING);
    expect(refused.key).toEqual({ holder: null, leader: null, data: { wave: 2 } });
    expect(isLeading(refused, TTL, T0)).toBe(false);
    expect(acquireRefused(state("other"), "own-session", T0, TIMING).key).toEqual(state("other").key);
  });

  it("a session Consul forgot takes our hold on the key with it, and nobody else's", () => {
    const lost = sessionLost(state("self"));
    expect(lost.session).toBeNull();
    expect(lost.key).toEqual({ holder: null, leader: null, data: { wave: 2 } });
    expect(sessionLost(state("other")).key).toEqual(state("other").key);
  });
});
