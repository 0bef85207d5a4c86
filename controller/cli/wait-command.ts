import type { Logger } from "pino";
import { parseDuration, parseFlags } from "../../agent/cli/args.js";
import { EXIT } from "../../agent/cli/run-cli.js";
import { InvalidInputError } from "../../agent/errors.js";
import { labelKeySchema, labelValueSchema } from "../config/controller-config.js";
import type { FleetStatus } from "../status/status-schema.js";
import { API_FLAG_OPTIONS, API_FLAGS_HELP, ApiClient } from "./api-client.js";
import { summaryLine } from "./format-status.js";

export const WAIT_HELP = `Usage: hafleet wait [--version V] [--backend NAME] [--selector K=V ...] [--timeout T] [--url URL]

Blocks until the fleet runs the desired state, for deploy pipelines: every connected agent
(or those matching --selector) in sync on every backend (or on --backend). With --version, until
a backend's desired version is V and every agent assigned that backend runs it. Disconnected
agents are listed but do not hold it up. Fails at once when an agent rejects what it waits for.

  --version V       a backend version, as 'hafleet status' shows it
  --backend NAME    only this backend
  --selector K=V    only agents with this label (repeat: all must match)
  --timeout T       give up after T (default 5m)
  --interval T      how often to ask the controller (default 1s)
${API_FLAGS_HELP}
  -h, --help        this text

Exit codes: 0 converged; 1 not converged in time, or rejected; 2 invalid input; 3 controller
unreachable or refusing.`;

export type WaitVerdict = { done: true; detail: string } | { done: false; failed: boolean; detail: string };

export interface WaitTarget {
  version?: string;
  backend?: string;
  selector: Readonly<Record<string, string>>;
}

/** Pure: whether the status shows the target reached, failed for good, or still on its way. */
export function judgeWait(status: FleetStatus, target: WaitTarget): WaitVerdict {
  const agents = status.agents.filter((agent) => Object.entries(target.selector).every(([key, value]) => agent.labels[key] === value));
  const connected = agents.filter((agent) => agent.connected);
  const relevant = connected.flatMap((agent) =>
    agent.backends
      .filter((backend) => (target.backend === undefined || backend.backend === target.backend) && (target.version === undefined || backend.desiredVersion === target.version))
      .map((backend) => ({ agent: agent.agent, backend })),
  );
  if (target.version !== undefined && !status.backends.some((backend) => backend.version === target.version)) {
    const current = status.backends.map((backend) => `${backend.backend}=${backend.version}`).join(", ") || "none";
    return { done: false, failed: false, detail: `no backend's desired version is ${target.version} yet (now: ${current})` };
  }
  const rejected = relevant.find(({ backend }) => backend.state === "rejected");
  if (rejected) return { done: false, failed: true, detail: `${rejected.agent} rejected ${rejected.backend.backend} ${rejected.backend.desiredVersion}: ${rejected.backend.error ?? "?"}` };
  const missing = relevant.filter(({ backend }) => backend.state !== "in-sync");
  const away = agents.length - connected.length;
  const note = away > 0 ? ` (${away} disconnected agent(s) not waited for)` : "";
  if (missing.length === 0) return { done: true, detail: `${relevant.length} agent backend(s) in sync${note}` };
  const sample = missing.slice(0, 5).map(({ agent, backend }) => `${agent} ${backend.backend} ${backend.state}`).join(", ");
  return { done: false, failed: false, detail: `${missing.length} of ${relevant.length} agent backend(s) not in sync: ${sample}${missing.length > 5 ? ", ..." : ""}${note}` };
}

export async function waitCommand(args: string[], _log: Logger): Promise<number> {
  const flags = parseFlags("wait", args, {
    ...API_FLAG_OPTIONS,
    version: { type: "string" },
    backend: { type: "string" },
    selector: { type: "string", multiple: true },
    timeout: { type: "string" },
    interval: { type: "string" },
  });
  const timeoutMs = parseDuration("--timeout", flags.timeout ?? "5m");
  const intervalMs = parseDuration("--interval", flags.interval ?? "1s");
  const target: WaitTarget = { selector: parseSelector(flags.selector ?? []) };
  if (flags.version !== undefined) target.version = flags.version;
  if (flags.backend !== undefined) target.backend = flags.backend;
  const client = await ApiClient.fromFlags(flags);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await client.status(flags.backend === undefined ? {} : { backend: flags.backend });
    const verdict = judgeWait(status, target);
    if (verdict.done) {
      process.stdout.write(`converged: ${verdict.detail}\n${summaryLine(status)}\n`);
      return EXIT.ok;
    }
    if (verdict.failed || Date.now() >= deadline) {
      process.stderr.write(`${verdict.failed ? "failed" : `not converged within ${flags.timeout ?? "5m"}`}: ${verdict.detail}\n${summaryLine(status)}\n`);
      return EXIT.notConverged;
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(intervalMs, Math.max(0, deadline - Date.now()))));
  }
}

function parseSelector(entries: readonly string[]): Record<string, string> {
  const selector: Record<string, string> = {};
  for (const entry of entries) {
    const [key = "", ...rest] = entry.split("=");
    const value = rest.join("=");
    if (rest.length === 0 || !labelKeySchema.safeParse(key).success || !labelValueSchema.safeParse(value).success) {
      throw new InvalidInputError("--selector", [{ path: "--selector", message: "must be KEY=VALUE, each 1-63 letters, digits, '.', '_' or '-'", value: entry }]);
    }
    selector[key] = value;
  }
  return selector;
}
