import type { Logger } from "pino";
import { parseDuration, parseFlags } from "../../agent/cli/args.js";
import { EXIT } from "../../agent/cli/run-cli.js";
import { UsageError } from "../../agent/errors.js";
import { API_FLAG_OPTIONS, API_FLAGS_HELP, ApiClient } from "./api-client.js";
import { formatStatus } from "./format-status.js";

export const STATUS_HELP = `Usage: hafleet status [--json] [--watch] [--agent ID] [--backend NAME] [--problems] [--url URL]

What every agent runs, as the controller sees it: a summary line, the backends with how many
agents run their desired version ("612/640"), then the agents, problems first. States: in-sync,
pending (sent, not acked), rejected (nacked, with the error), drifted (acked, but HAProxy runs
something else), held (servers an operator drained or put in maintenance), not-sent (waiting,
e.g. for its rollout wave or a freeze), disconnected (since when, with its last versions).

  --json            the controller's JSON, as served at /api/v1/status
  --watch           print again every --interval (default 2s) until interrupted
  --agent ID        one agent
  --backend NAME    one backend
  --problems        only what is not in sync
${API_FLAGS_HELP}
  -h, --help        this text

Exit codes: 0 everything shown is in sync; 1 something is not; 2 invalid input; 3 controller
unreachable or refusing.`;

export async function statusCommand(args: string[], _log: Logger): Promise<number> {
  const flags = parseFlags("status", args, {
    ...API_FLAG_OPTIONS,
    json: { type: "boolean" },
    watch: { type: "boolean" },
    interval: { type: "string" },
    agent: { type: "string" },
    backend: { type: "string" },
    problems: { type: "boolean" },
  });
  if (flags.interval !== undefined && !flags.watch) throw new UsageError("--interval goes with --watch");
  const intervalMs = parseDuration("--interval", flags.interval ?? "2s");
  const client = await ApiClient.fromFlags(flags);
  const query = { agent: flags.agent, backend: flags.backend, problems: flags.problems };
  for (;;) {
    const status = await client.status(query);
    const text = flags.json ? JSON.stringify(status, null, 2) : formatStatus(status);
    if (flags.watch && process.stdout.isTTY) process.stdout.write("\x1b[H\x1b[2J");
    process.stdout.write(text + "\n");
    const inSync = status.agents.every((agent) => agent.state === "in-sync");
    if (!flags.watch) return inSync ? EXIT.ok : EXIT.notConverged;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
