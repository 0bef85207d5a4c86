import type { Logger } from "pino";
import { InvalidInputError, UsageError } from "../errors.js";
import { formatHybridOutcome, hybridFlagOptions, hybridReloader, openHybridSession, parseHybridFlags, runHybrid } from "../hybrid/hybrid-session.js";
import { parseDesiredStateJson, type DesiredState } from "../model/desired-state.js";
import { manageFlagIssues, managedBackends, unmanagedIssues } from "../model/manage-patterns.js";
import { LedgerStore } from "../reconcile/ledger-store.js";
import { reconcileSocket, type SocketReport } from "../reconcile/reconciler.js";
import { RuntimeClient } from "../runtime/runtime-client.js";
import { parseSocketAddress } from "../runtime/socket-address.js";
import { parseDuration, parseFlags } from "./args.js";
import { stateDirProblem } from "../config/check-files.js";
import { readInputFile } from "./read-input.js";
import { terminalSafeJson, terminalSafeLines } from "./terminal-safe.js";
import { formatDryRun, formatPlan, formatReport, planConverges } from "./format.js";

export const APPLY_HELP = `Usage: hafleet-agent apply --socket SOCKET [--socket SOCKET ...] --desired FILE [options]

Plans the Runtime API commands that make each HAProxy run the desired backend servers,
prints the plan, applies it (no reload), reads HAProxy back and reports. Exits 0 only if
every HAProxy now runs the desired state.

  --socket S        admin socket: a unix path, or HOST:PORT (repeat for several HAProxy)
  --desired FILE    desired-state JSON ('-' for stdin)
  --dry-run         print the plan and what it cannot place, change nothing
  --json            print the plan and the report as JSON
  --drain-period D  how long a removed server drains before maintenance (default 5s;
                    sooner when it has no sessions left)
  --wait D          how long to keep going while drains run out (default: drain period + 5s)
  --state-dir DIR   where hafleet remembers the drains/maintenances it set itself, to tell
                    them from an operator's (default /var/lib/hafleet)
  --allow-empty     let an empty server list empty a backend that serves traffic
  --manage P        a backend this host lets hafleet change: a name, or a pattern where '*'
                    stands for any characters, e.g. be_web_* (repeat); a desired backend
                    outside them refuses the whole file (exit 2). None given: every backend
  -h, --help        this text

Hybrid mode (all four together, one --socket): after applying, re-render FILE from what
HAProxy runs plus servers no slot could take, check it with haproxy -c, and reload through
the master CLI only when needed (slots exhausted on a backend refusing dynamic servers, or
a changed template); a failed reload restores the previous FILE and exits 1.
  --config-template T  nunjucks template (e.g. deploy/hybrid/haproxy.cfg.njk)
  --config-out FILE    the haproxy.cfg HAProxy runs from
  --state-file F       the server-state file (the default template's stateFile)
  --master-socket S    master CLI socket (haproxy -W -S S)
  --spare-slots N      spare disabled slots per backend in the file (default 4)
  --var KEY=VALUE      a template variable (stateFile and adminSocket default to the flags)

Exit codes: 0 desired state running; 1 not (refused, not placed, still draining);
2 invalid input (nothing applied); 3 HAProxy unreachable or unreadable.
With --dry-run: 0 the plan would make HAProxy run the desired state; 1 it would not (servers
it cannot place, each printed with the reason, as --json's 'unplaced' says); 2 and 3 as above.`;

export async function applyCommand(args: string[], log: Logger): Promise<number> {
  const flags = parseFlags("apply", args, {
    socket: { type: "string", multiple: true },
    desired: { type: "string" },
    "dry-run": { type: "boolean" },
    json: { type: "boolean" },
    "drain-period": { type: "string" },
    wait: { type: "string" },
    "state-dir": { type: "string" },
    "allow-empty": { type: "boolean" },
    manage: { type: "string", multiple: true },
    ...hybridFlagOptions,
  });
  const manageIssues = manageFlagIssues(flags.manage ?? []);
  if (manageIssues.length > 0) throw new InvalidInputError("command line", manageIssues);
  const sockets = (flags.socket ?? []).map(parseSocketAddress);
  if (sockets.length === 0 || flags.desired === undefined) throw new UsageError("apply needs --socket and --desired");
  const drainMs = parseDuration("--drain-period", flags["drain-period"] ?? "5s");
  const waitMs = flags.wait === undefined ? drainMs + 5_000 : parseDuration("--wait", flags.wait);
  const hybridSettings = parseHybridFlags(flags);
  if (hybridSettings && sockets.length > 1) throw new UsageError("hybrid mode manages one HAProxy (one config file): give one --socket");
  const desired = await loadDesired(flags.desired);
  // Before any socket is opened: a file naming a backend this host keeps for itself is refused
  // whole, so a typo never applies half of it.
  const unmanaged = unmanagedIssues(desired.backends, managedBackends(flags.manage));
  if (unmanaged.length > 0) throw new InvalidInputError(sourceOf(flags.desired), unmanaged);
  const stateDir = flags["state-dir"] ?? "/var/lib/hafleet";
  // Before any socket is opened: a state dir that cannot hold the ledgers would fail mid-apply
  // (a dry run only reads them).
  const stateDirIssue = flags["dry-run"] ? null : await stateDirProblem(stateDir);
  if (stateDirIssue !== null) throw new InvalidInputError("--state-dir", [{ path: "", message: stateDirIssue }]);
  const hybrid = hybridSettings && !flags["dry-run"] ? await openHybridSession(hybridSettings, flags.socket![0]!) : null;
  let hybridOk = true;

  const reports = await Promise.all(
    sockets.map(async (address) => {
      const client = new RuntimeClient(address, { logger: log });
      try {
        const options = { drainMs, waitMs, pollMs: 250, allowEmpty: flags["allow-empty"] ?? false, configRendered: hybridSettings !== null, dryRun: flags["dry-run"] ?? false, logger: log };
        const reconcile = () => reconcileSocket(client, desired, new LedgerStore(stateDir, client.name), options);
        const report = await reconcile();
        if (!hybrid) return report;
        const outcome = await runHybrid(hybrid, client, desired, report, reconcile, log, hybridReloader(hybrid, client, log));
        process.stderr.write(terminalSafeLines(formatHybridOutcome(outcome, hybrid.settings.configFile)) + "\n");
        hybridOk = outcome.ok;
        return outcome.report;
      } finally {
        client.close();
      }
    }),
  );
  print(reports, flags.json ?? false, flags["dry-run"] ?? false);
  if (flags["dry-run"]) return reports.every((report) => planConverges(report.plan)) ? 0 : 1;
  return hybridOk && reports.every((report) => report.converged) ? 0 : 1;
}

async function loadDesired(file: string): Promise<DesiredState> {
  return parseDesiredStateJson(await readInputFile(file, "desired-state file"), sourceOf(file));
}

function sourceOf(file: string): string {
  return file === "-" ? "stdin" : file;
}

function print(reports: readonly SocketReport[], json: boolean, dryRun: boolean): void {
  if (json) {
    const rendered = reports.map((report) => ({
      socket: report.socket,
      converged: report.converged,
      // A dry run's exit code: `converged` says whether HAProxy runs the desired state already.
      ...(dryRun ? { wouldConverge: planConverges(report.plan) } : {}),
      plan: report.plan,
      outcomes: report.outcomes,
      final: report.final,
    }));
    process.stdout.write(terminalSafeJson(JSON.stringify({ dryRun, sockets: rendered }, commandsAsText, 2)) + "\n");
    return;
  }
  for (const report of reports) {
    process.stdout.write((dryRun ? formatDryRun(report) : `${formatPlan(report.socket, report.plan)}\n${formatReport(report)}`) + "\n");
  }
}

/** Commands serialise as the text HAProxy receives. */
function commandsAsText(key: string, value: unknown): unknown {
  if ((key === "prepare" || key === "commit") && Array.isArray(value)) return value.map((command: { text: string }) => command.text);
  return value;
}
