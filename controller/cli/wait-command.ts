import type { Logger } from "pino";
import { parseDuration, parseFlags } from "../../agent/cli/args.js";
import { EXIT } from "../../agent/cli/run-cli.js";
import { UsageError } from "../../agent/errors.js";
import { parseSelector } from "../status/label-selector.js";
import { API_FLAG_OPTIONS, API_FLAGS_HELP, ApiClient } from "./api-client.js";
import { summaryLine } from "./format-status.js";
import { parseEndpointCondition } from "../status/endpoint-condition.js";
import { judgeWait, type WaitTarget } from "./wait-judge.js";

export { judgeWait, type WaitTarget, type WaitVerdict } from "./wait-judge.js";

export const WAIT_HELP = `Usage: hafleet wait [--version V] [--backend NAME] [--selector K=V ...] [--contains B=ADDR:PORT ...]
                   [--lacks B=ADDR:PORT ...] [--ignore-disconnected] [--timeout T] [--url URL]

Blocks until the fleet runs what the controller wants, for deploy pipelines. Exit 0 only when
at least one agent matches and every matching agent (--selector) is in sync, by its own
report, on the version each matching backend (--backend; default all) heads to: a rollout's
target included, so a staged change is waited for through its last wave.

  --version V       only backends whose desired version is V (as 'hafleet status' shows it);
                    V rolled back, superseded or rejected fails at once
  --backend NAME    only this backend
  --selector K=V    only agents with this label (repeat: all must match)
  --contains B=ADDR:PORT
                    every matching agent assigned backend B serves ADDR:PORT, as its HAProxy
                    reports (repeatable): a new instance is live everywhere
  --lacks B=ADDR:PORT
                    no matching agent's HAProxy serves ADDR:PORT in B any more (repeatable)
  --ignore-disconnected
                    leave disconnected matching agents out rather than wait for them
  --timeout T       give up after T (default 5m)
  --interval T      how often to ask the controller (default 1s)
${API_FLAGS_HELP}
  -h, --help        this text

Fails at once (exit 1, the reason on one line) when: no agent matches, no such backend, an
agent rejects what is waited for, the rollout of it halts or rolls back, or the fleet is
frozen while something is still missing. Waits (and names what it waited for at the timeout)
for: agents not in sync yet, a rollout's later waves, disconnected agents, discovery failing
or never answered for a backend.

Exit codes: 0 done; 1 failed or not done in time; 2 invalid input; 3 controller unreachable or
refusing.`;

export async function waitCommand(args: string[], _log: Logger): Promise<number> {
  const flags = parseFlags("wait", args, {
    ...API_FLAG_OPTIONS,
    version: { type: "string" },
    backend: { type: "string" },
    selector: { type: "string", multiple: true },
    contains: { type: "string", multiple: true },
    lacks: { type: "string", multiple: true },
    "ignore-disconnected": { type: "boolean" },
    timeout: { type: "string" },
    interval: { type: "string" },
  });
  const timeoutMs = parseDuration("--timeout", flags.timeout ?? "5m");
  const intervalMs = parseDuration("--interval", flags.interval ?? "1s");
  const contains = (flags.contains ?? []).map((text) => parseEndpointCondition("--contains", text));
  const lacks = (flags.lacks ?? []).map((text) => parseEndpointCondition("--lacks", text));
  const conditions = [...contains, ...lacks];
  if (conditions.length > 16) throw new UsageError("at most 16 --contains and --lacks together");
  if (flags.backend !== undefined && conditions.some((condition) => condition.backend !== flags.backend)) {
    throw new UsageError("--contains and --lacks name their backend: with --backend, only that one");
  }
  if (flags.version !== undefined && conditions.length > 0) throw new UsageError("give --version or --contains/--lacks, not both: an endpoint says more than a version");
  const target: WaitTarget = { selector: parseSelector(flags.selector ?? []), contains, lacks, ignoreDisconnected: flags["ignore-disconnected"] ?? false };
  if (flags.version !== undefined) target.version = flags.version;
  if (flags.backend !== undefined) target.backend = flags.backend;
  const client = await ApiClient.fromFlags(flags);
  const query: Record<string, string | string[]> = {};
  if (conditions.length > 0) query["endpoint"] = conditions.map((condition) => `${condition.backend}=${condition.endpoint}`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await client.status(query);
    if (target.rolloutAtStart === undefined) target.rolloutAtStart = status.rollout === null ? null : { id: status.rollout.id, phase: status.rollout.phase };
    const verdict = judgeWait(status, target);
    if (verdict.done) {
      // Only the verdict: the fleet-wide summary may be about agents this wait does not cover.
      process.stdout.write(`done: ${verdict.detail}\n`);
      return EXIT.ok;
    }
    if (verdict.failed || Date.now() >= deadline) {
      process.stderr.write(`${verdict.failed ? "failed" : `not done within ${flags.timeout ?? "5m"}`}: ${verdict.detail}\n${summaryLine(status)}\n`);
      return EXIT.notConverged;
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(intervalMs, Math.max(0, deadline - Date.now()))));
  }
}
