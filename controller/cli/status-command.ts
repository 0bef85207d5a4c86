import type { Logger } from "pino";
import { parseDuration, parseFlags } from "../../agent/cli/args.js";
import { EXIT } from "../../agent/cli/run-cli.js";
import { UsageError } from "../../agent/errors.js";
import { parseSelector } from "../status/label-selector.js";
import { isHealthy } from "../status/fleet-status.js";
import type { FleetStatus } from "../status/status-schema.js";
import { API_FLAG_OPTIONS, API_FLAGS_HELP, ApiClient } from "./api-client.js";
import { formatStatus, printable } from "./format-status.js";

export const STATUS_HELP = `Usage: hafleet status [-o wide|json] [--watch] [--agent ID] [--backend NAME] [--selector K=V] [--problems]
                     [--no-headers] [--url URL]

What every agent runs, as the controller sees it: a summary line, the backends with how many
agents run their desired version ("612/640"), then the agents, problems first. States: in-sync,
pending (sent, not acked), rejected (nacked, with the error), drifted (acked, but HAProxy runs
something else), held (servers an operator drained or put in maintenance), not-sent (waiting,
e.g. for its rollout wave or a freeze), disconnected (since when, with its last versions).

  -o, --output F    agents (default: one row per agent: state, backends in sync, last seen,
                    hafleet version, labels, first problem); wide (one row per agent and
                    backend: desired and applied versions, serving servers, detail); json (the
                    controller's JSON, as served at /api/v1/status)
  --json            the same as -o json
  --no-headers      only the agent rows, without the header, summary and backends (for scripts)
  --selector K=V    only agents with this label (repeat: all must match)
  --watch           redraw every --interval (default 2s), with the time, until interrupted
  --agent ID        one agent
  --backend NAME    one backend
  --problems        only what is not in sync
${API_FLAGS_HELP}
  -h, --help        this text

Exit codes: 0 everything shown is in sync and discovery is ok for every backend shown; 1
something is not (an agent, discovery failing or never answered, a duplicate agent id), or
--agent/--backend names nothing the controller knows; 2 invalid input; 3 controller
unreachable or refusing.`;

export async function statusCommand(args: string[], _log: Logger): Promise<number> {
  const flags = parseFlags("status", args, {
    ...API_FLAG_OPTIONS,
    json: { type: "boolean" },
    output: { type: "string", short: "o" },
    "no-headers": { type: "boolean" },
    selector: { type: "string", multiple: true },
    watch: { type: "boolean" },
    interval: { type: "string" },
    agent: { type: "string" },
    backend: { type: "string" },
    problems: { type: "boolean" },
  });
  if (flags.interval !== undefined && !flags.watch) throw new UsageError("--interval goes with --watch");
  const intervalMs = parseDuration("--interval", flags.interval ?? "2s");
  const output = flags.output ?? (flags.json ? "json" : "agents");
  if (output !== "agents" && output !== "wide" && output !== "json") throw new UsageError(`-o takes agents, wide or json, not '${printable(output)}'`);
  if (flags.json && flags.output !== undefined && flags.output !== "json") throw new UsageError("--json is -o json: give one");
  const selector = parseSelector(flags.selector ?? []);
  const client = await ApiClient.fromFlags(flags);
  const query = { agent: flags.agent, backend: flags.backend, problems: flags.problems, selector: Object.entries(selector).map(([key, value]) => `${key}=${value}`) };
  for (;;) {
    const status = await client.status(query);
    const unmatched = nothingMatched(status, flags.agent, flags.backend);
    const text = output === "json" ? JSON.stringify(status, null, 2) : formatStatus(status, { view: output, headers: !flags["no-headers"] });
    if (flags.watch && process.stdout.isTTY) process.stdout.write("\x1b[H\x1b[2J");
    if (flags.watch && output !== "json") process.stdout.write(`${new Date().toISOString()}  (every ${flags.interval ?? "2s"}; Ctrl-C to stop)\n`);
    if (unmatched !== null && !flags.watch) {
      process.stderr.write(`${unmatched}\n`);
      return EXIT.notConverged;
    }
    process.stdout.write((unmatched === null ? text : unmatched) + "\n");
    if (!flags.watch) return isHealthy(status) ? EXIT.ok : EXIT.notConverged;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** "--agent nosuch" must not look like a fleet with nothing wrong: it names nothing. */
function nothingMatched(status: FleetStatus, agent: string | undefined, backend: string | undefined): string | null {
  const matched = status.matched;
  if (matched === undefined) return null;
  if (agent !== undefined && matched.agents === 0) return `no agent '${printable(agent)}' is known to the controller (${status.summary.agents} agent(s) known)`;
  if (backend !== undefined && matched.backends === 0) return `no backend '${printable(backend)}' is mapped by the controller`;
  return null;
}
