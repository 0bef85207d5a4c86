import { z } from "zod";
import type { SoakSettings } from "./soak-run.js";

/*
 * The soak's size, the one thing the CI test and the benchmark set differently; everything
 * else is fixed here so both run the same scenario.
 */

const count = (max: number) => z.coerce.number({ error: "must be a number" }).int("must be a whole number").min(1, "must be at least 1").max(max, `must be at most ${max}`);

export const soakSizeSchema = z.strictObject({
  events: count(1_000_000),
  backends: count(200),
  phases: count(1_000),
  rate: count(2_000),
  /** The whole run's bound in ms; default: twice the events' own pace, plus a minute. */
  maxMs: count(24 * 3_600_000).optional(),
});
export type SoakSize = z.output<typeof soakSizeSchema>;

/** One event per service and second: the controller's Consul watch refills one query a second. */
const EVENT_INTERVAL_MS = 1_000;

export function parseSoakSize(input: Record<string, unknown>, source: string): SoakSize {
  const parsed = soakSizeSchema.safeParse(input);
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues.map((issue) => `${issue.path.join(".") || "value"}: ${issue.message} (got ${JSON.stringify(issue.path.length > 0 ? input[String(issue.path[0])] : input)})`);
  throw new Error(`${source}: ${issues.join("; ")}`);
}

export function soakSettings(size: SoakSize): SoakSettings {
  return {
    events: size.events,
    backends: size.backends,
    phases: size.phases,
    // 4 slots, up to 8 servers: every backend keeps crossing into added servers and back.
    slots: 4,
    minServing: 2,
    maxServing: 8,
    upstreams: 10,
    ratePerSecond: size.rate,
    eventIntervalMs: EVENT_INTERVAL_MS,
    sampleMs: 1_000,
    pollMs: 20,
    convergeTimeoutMs: 20_000,
    debounce: { quietMs: 10, maxMs: 100 },
    drainPeriod: "500ms",
    settleTimeoutMs: 15_000,
    maxMs: size.maxMs ?? 60_000 + (2 * size.events * EVENT_INTERVAL_MS) / size.backends,
  };
}
