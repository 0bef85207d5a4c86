import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { ConsulLeadership } from "../../controller/leadership/consul-leadership.js";
import { startConsulEmulator, type ConsulEmulator } from "../consul-emulator/consul-emulator.js";
import { until } from "../support/helpers.js";

// The leadership against a real cluster's limits and habits: a 503 from Consul's rate limiter
// on a renewal, a clean stop that hands over at once, and a session bound to no node's gossip.

const KEY = "hafleet/limits-leader";
const dataSchema = z.strictObject({ wave: z.number() });

let consul: ConsulEmulator | undefined;
const leaderships: ConsulLeadership<z.infer<typeof dataSchema>>[] = [];

afterEach(async () => {
  await Promise.all(leaderships.splice(0).map((leadership) => leadership.stop()));
  await consul?.close();
  consul = undefined;
});

function replica(id: string, options: { sessionTtlMs: number; lockDelayMs: number }): { leadership: ConsulLeadership<z.infer<typeof dataSchema>>; transitions: string[] } {
  const transitions: string[] = [];
  const leadership = new ConsulLeadership({
    address: consul!.url,
    key: KEY,
    ...options,
    replica: { id },
    data: dataSchema,
    logger: pino({ level: "silent" }),
  });
  leadership.onChange((view) => transitions.push(view.leading ? "leads" : "follows"));
  leaderships.push(leadership);
  leadership.start();
  return { leadership, transitions };
}

describe("leadership under Consul's limits", { timeout: 30_000 }, () => {
  it("keeps leading through a 503 on a renewal when the retry, honouring Retry-After within the lease, succeeds", async () => {
    consul = await startConsulEmulator({ sessionTtlMinMs: 100 });
    const { leadership, transitions } = replica("ctl-1", { sessionTtlMs: 4_000, lockDelayMs: 100 });
    await until(() => leadership.leading() || undefined, "leading");
    const session = consul.lockHolder(KEY)!;
    consul.failNext(1, 503, "rate limit exceeded", { endpoint: "session", target: session, retryAfter: "1" });
    // The renewal falls due at 2 s; the 503 asks for 1 s, and 1 s is within half of the 1.6 s left of the lease.
    await until(() => consul!.sessionLog.filter((entry) => entry.operation === "renew" && entry.status === 200).length >= 1 || undefined, "a renewal after the 503", 10_000);
    const renewals = consul.sessionLog.filter((entry) => entry.operation === "renew");
    expect(renewals.map((entry) => entry.status).slice(0, 2)).toEqual([503, 200]);
    expect(renewals[1]!.at - renewals[0]!.at).toBeGreaterThanOrEqual(750);
    expect(leadership.leading()).toBe(true);
    expect(transitions).toEqual(["leads"]);
    expect(consul.lockHolder(KEY)).toBe(session);
  });

  it("releases the key before destroying the session on a clean stop: the next leader need not wait out the lock-delay, and the data stays", async () => {
    consul = await startConsulEmulator({ sessionTtlMinMs: 100 });
    const first = replica("ctl-1", { sessionTtlMs: 10_000, lockDelayMs: 15_000 });
    await until(() => first.leadership.leading() || undefined, "ctl-1 leading");
    await first.leadership.publish({ wave: 3 });
    const second = replica("ctl-2", { sessionTtlMs: 10_000, lockDelayMs: 15_000 });
    await until(() => second.leadership.view().leader?.id === "ctl-1" || undefined, "ctl-2 following ctl-1");
    const stoppedAt = Date.now();
    await first.leadership.stop();
    await until(() => second.leadership.leading() || undefined, "ctl-2 leading", 10_000);
    expect(Date.now() - stoppedAt).toBeLessThan(5_000);
    expect(second.leadership.view().data).toEqual({ wave: 3 });
  });

  it("binds the session to no node check by default: the node's serfHealth going critical does not end the leadership", async () => {
    consul = await startConsulEmulator({ sessionTtlMinMs: 100 });
    const { leadership, transitions } = replica("ctl-1", { sessionTtlMs: 10_000, lockDelayMs: 100 });
    await until(() => leadership.leading() || undefined, "leading");
    const session = consul.lockHolder(KEY)!;
    consul.setNodeHealth("critical");
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(consul.sessionIds()).toContain(session);
    expect(leadership.leading()).toBe(true);
    expect(transitions).toEqual(["leads"]);
  });
});
