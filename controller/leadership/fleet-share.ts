import type { Logger } from "pino";
import { z } from "zod";
import { systemClock, type WatchClock } from "../discovery/consul/consul-watch.js";
import { encodeReport, readReport, reportFingerprint, type ExceptionsOf, type ReplicaReport } from "../status/replica-report.js";
import type { AgentStatus } from "../status/status-schema.js";
import { followBlocking } from "./blocking-follow.js";
import type { ConsulLockApi, KeyAnswer, TreeAnswer } from "./consul-lock-api.js";
import { retryDelayMs } from "./leadership-state.js";

/*
 * What replicas share in Consul KV under the fleet prefix, beside the leadership:
 * - `<prefix>/replicas/<id>`: each replica's report of its agents (replica-report.ts), written
 *   under the replica's session (?acquire), so it stops counting once that session ends;
 * - `<prefix>/freeze`: the kill switch, written by whichever replica an operator asked.
 * Each is followed by blocking reads. Writes are aggregated: at most one per `publishMs`, and
 * only when the report changed (or every `refreshMs`, so readers can tell a live report).
 */

const freezeValueSchema = z.strictObject({
  freeze: z.strictObject({ since: z.number().int().min(0), reason: z.string().min(1).max(512) }).nullable(),
  by: z.string(),
});
export type SharedFreeze = z.infer<typeof freezeValueSchema>["freeze"];

/** The Consul side, as the leadership provides it: its connection and its session. */
export interface ShareConsul {
  keyApi(key: string): ConsulLockApi;
  sessionId(): string | null;
  requestTimeoutMs(): number;
}

export interface FleetShareOptions {
  consul: ShareConsul;
  /** e.g. `hafleet/rollout/fleet`: no trailing '/'. */
  prefix: string;
  replica: string;
  /** This replica's agent rows, worst first, and what another replica needs to answer endpoint questions of them. */
  agents: () => { agents: readonly AgentStatus[]; exceptions: ExceptionsOf };
  /** The fleet's freeze changed (or was first read): apply it here. */
  freezeChanged: (freeze: SharedFreeze) => void;
  /** Read once if the fleet has no freeze key yet: this replica's stored freeze is then shared. */
  storedFreeze: () => SharedFreeze;
  logger: Logger;
  clock?: WatchClock;
  publishMs?: number;
  refreshMs?: number;
  maxBytes?: number;
}

export class FleetShare {
  private readonly clock: WatchClock;
  private readonly reportKey: string;
  private readonly freezeKey: string;
  private readonly controller = new AbortController();
  private loops: Promise<void>[] = [];
  private reports = new Map<string, ReplicaReport>();
  /** Per key, the ModifyIndex of the last unusable value logged: one error per bad value. */
  private readonly reportedProblems = new Map<string, number>();
  private written: { fingerprint: string; session: string; at: number } | null = null;
  private cut: { published: number; connected: number } | null = null;
  private freezeIndex = -1;
  private refused = false;

  constructor(private readonly options: FleetShareOptions) {
    this.clock = options.clock ?? systemClock;
    this.reportKey = `${options.prefix}/replicas/${options.replica}`;
    this.freezeKey = `${options.prefix}/freeze`;
  }

  start(): void {
    const signal = this.controller.signal;
    this.loops = [this.publishLoop(signal), this.followReports(signal), this.followFreeze(signal)];
  }

  /** Stops, and deletes this replica's report so the others drop its agents now rather than at its session's end. */
  async stop(): Promise<void> {
    this.controller.abort();
    await Promise.all(this.loops);
    if (this.written === null) return;
    try {
      await this.options.consul.keyApi(this.reportKey).remove(this.options.consul.requestTimeoutMs());
    } catch (error) {
      this.options.logger.warn({ key: this.reportKey, err: error }, "cannot delete this replica's report: the others drop it when its session ends");
    }
  }

  /** The other replicas' live reports. */
  peers(): ReplicaReport[] {
    return [...this.reports.values()].filter((report) => report.replica !== this.options.replica);
  }

  /** What this replica's last report left out, or null when it held every agent. */
  truncated(): { published: number; connected: number } | null {
    return this.cut;
  }

  /** Writes the fleet's freeze: every replica follows it within its next read. */
  async shareFreeze(freeze: SharedFreeze): Promise<void> {
    await this.options.consul.keyApi(this.freezeKey).put(JSON.stringify({ freeze, by: this.options.replica }), this.options.consul.requestTimeoutMs(), this.controller.signal);
  }

  // ---- This replica's report: written under its session when it changed, at most once per publishMs ----

  private async publishLoop(signal: AbortSignal): Promise<void> {
    const publishMs = this.options.publishMs ?? 1_000;
    while (!signal.aborted) {
      await this.publish(signal);
      await this.clock.sleep(publishMs, signal);
    }
  }

  private async publish(signal: AbortSignal): Promise<void> {
    const session = this.options.consul.sessionId();
    if (session === null) return;
    const now = this.clock.now();
    const { agents, exceptions } = this.options.agents();
    const { value, report } = encodeReport(this.options.replica, agents, now, { exceptions, ...(this.options.maxBytes === undefined ? {} : { maxBytes: this.options.maxBytes }) });
    const fingerprint = reportFingerprint(report);
    const written = this.written;
    if (written !== null && written.fingerprint === fingerprint && written.session === session && now - written.at < (this.options.refreshMs ?? 20_000)) return;
    try {
      const held = await this.options.consul.keyApi(this.reportKey).acquire(session, value, this.options.consul.requestTimeoutMs(), signal);
      if (!held) {
        // A lock-delay after this replica's last session ended, or another process with this replica's id: said once, retried each turn.
        if (!this.refused) this.options.logger.warn({ key: this.reportKey, session }, "Consul refused this replica's report (a lock-delay after its last session, or another replica with this id holds it): the others do not see its agents; retrying");
        this.refused = true;
        return;
      }
      if (this.refused) this.options.logger.info({ key: this.reportKey, session }, "this replica's report is shared again");
      this.refused = false;
      this.written = { fingerprint, session, at: now };
      const cut = report.truncated ? { published: report.agents.length, connected: report.connected } : null;
      if (cut !== null && this.cut === null) this.options.logger.warn({ key: this.reportKey, ...cut }, "this replica's report is over Consul's value size limit: the worst agents are shared, the others are left out");
      this.cut = cut;
    } catch (error) {
      if (signal.aborted) return;
      this.options.logger.warn({ key: this.reportKey, err: error }, "cannot write this replica's report; retrying");
    }
  }

  // ---- The others' reports and the freeze, followed ----

  private followReports(signal: AbortSignal): Promise<void> {
    const api = this.options.consul.keyApi(`${this.options.prefix}/replicas`);
    return followBlocking<TreeAnswer>({ ...this.retries("the replicas' reports"), read: (index, readSignal) => api.readTree(index, readSignal), answered: (answer) => this.absorbReports(answer) }, signal);
  }

  private absorbReports(answer: TreeAnswer): void {
    const reports = new Map<string, ReplicaReport>();
    for (const entry of answer.entries) {
      // Not held: its replica's session ended (stopped, or its TTL ran out); its agents are not known to be there.
      if (entry.session === null || entry.value === null) continue;
      const reading = readReport(Buffer.from(entry.value, "base64").toString("utf8"), entry.key);
      if ("problem" in reading) {
        if (this.reportedProblems.get(entry.key) !== entry.modifyIndex) this.options.logger.error({ key: entry.key, problem: reading.problem }, "a replica's report is unusable: ignored");
        this.reportedProblems.set(entry.key, entry.modifyIndex);
        continue;
      }
      reports.set(entry.key, reading.report);
    }
    this.reports = reports;
  }

  private followFreeze(signal: AbortSignal): Promise<void> {
    const api = this.options.consul.keyApi(this.freezeKey);
    let first = true;
    return followBlocking<KeyAnswer>(
      {
        ...this.retries("the fleet's freeze"),
        read: (index, readSignal) => api.readKey(index, readSignal),
        answered: (answer) => {
          const entry = answer.entry;
          if (entry === null) {
            const stored = first ? this.options.storedFreeze() : null;
            if (stored !== null) void this.shareFreeze(stored).catch((error: unknown) => this.options.logger.error({ key: this.freezeKey, err: error }, "cannot share this replica's stored freeze"));
          } else if (entry.modifyIndex !== this.freezeIndex) {
            this.freezeIndex = entry.modifyIndex;
            const checked = freezeValueSchema.safeParse(parseJson(entry.value));
            if (checked.success) this.options.freezeChanged(checked.data.freeze);
            else this.options.logger.error({ key: this.freezeKey, problem: checked.error.message }, "the fleet's freeze key holds an unusable value: ignored");
          }
          first = false;
        },
      },
      signal,
    );
  }

  private retries(what: string): Pick<Parameters<typeof followBlocking>[0], "clock" | "failed" | "retryDelayMs"> {
    return {
      clock: this.clock,
      failed: (error, failures) => this.options.logger.warn({ prefix: this.options.prefix, failures, err: error }, `cannot read ${what}; retrying`),
      // Backoff from 0.2 s to 1 s: once Consul answers again, a freeze is seen within about a second.
      retryDelayMs: (failures) => retryDelayMs(failures, 4_000, Math.random),
    };
  }
}

function parseJson(value: string | null): unknown {
  if (value === null) return null;
  try {
    return JSON.parse(Buffer.from(value, "base64").toString("utf8"));
  } catch {
    return null;
  }
}
