import type { StepOutcome } from "../reconcile/execute-plan.js";
import type { ObservedServer, ObservedState } from "../reconcile/observed-state.js";
import type { Plan } from "../reconcile/planner.js";
import type { SocketReport } from "../reconcile/reconciler.js";
import type { BackendDiff } from "../reconcile/server-diff.js";
import { terminalSafe as safe } from "./terminal-safe.js";

/**
 * Human-readable renderings; `--json` prints the same data as JSON instead. Every name, address
 * and reply here came from HAProxy or a file: each is shown through `safe`, so none can write
 * escape sequences to the terminal or a line of its own.
 */

export function formatPlan(socket: string, plan: Plan): string {
  const lines = [`${safe(socket)}: ${plan.steps.length} change(s) planned`];
  for (const step of plan.steps) {
    lines.push(`  ${step.action.padEnd(10)} ${safe(`${step.backend}/${step.server}`).padEnd(32)} ${safe(step.endpoint ?? "-")}`);
    for (const command of [...step.prepare, ...step.commit]) lines.push(`      ${safe(command.text)}`);
  }
  return lines.join("\n");
}

export function formatReport(report: SocketReport): string {
  const applied = report.outcomes.filter((outcome) => outcome.ok).length;
  const verdict = report.converged ? "runs the desired state" : "does NOT run the desired state";
  const lines = [`${safe(report.socket)}: ${verdict} (${applied} change(s) applied)`];
  for (const outcome of report.outcomes) if (!outcome.ok) lines.push(`  failed: ${describeFailure(outcome)}`);
  lines.push(...backendNotes(report.final));
  for (const step of report.final.steps) lines.push(`  still to do: ${step.action} ${safe(`${step.backend}/${step.server}`)}`);
  return lines.join("\n");
}

/**
 * Whether running the plan would leave HAProxy with the desired state: nothing it cannot place.
 * A dry run's exit code and its last line both come from here, so they cannot disagree. Drains
 * under way do not count: they end on their own.
 */
export function planConverges(plan: Plan): boolean {
  return notPlaced(plan) === 0;
}

function notPlaced(plan: Plan): number {
  return plan.backends.reduce((count, backend) => count + backend.unplaced.length, 0);
}

/** `--dry-run`: the plan, what it leaves unplaced and why (as `--json` has it), and the verdict. */
export function formatDryRun(report: SocketReport): string {
  const { socket, plan } = report;
  const verdict = planConverges(plan) ? "would run the desired state after these changes" : `would NOT run the desired state: ${notPlaced(plan)} not placed`;
  return [formatPlan(socket, plan), ...backendNotes(plan), `${safe(socket)}: ${verdict}`].join("\n");
}

/** Per backend, what an operator should know besides the changes: held, unplaced, draining. */
function backendNotes(plan: Plan): string[] {
  const lines: string[] = [];
  for (const backend of plan.backends) {
    for (const held of backend.held) {
      lines.push(`  held by operator: ${safe(`${backend.backend}/${held.server} ${held.endpoint ?? "-"} (${held.admin}`)}${held.desired ? "" : ", no longer desired"})`);
    }
    for (const unplaced of backend.unplaced) lines.push(`  not placed: ${safe(`${backend.backend} ${unplaced.endpoint} (${unplaced.reason})`)}`);
    for (const drain of backend.draining) lines.push(`  still draining: ${safe(`${backend.backend}/${drain.server} ${drain.endpoint ?? "-"}`)}`);
    for (const name of backend.unmanageable) lines.push(`  left alone (name not usable in a command): ${safe(`${backend.backend}/${name}`)}`);
  }
  return lines;
}

function describeFailure(outcome: Extract<StepOutcome, { ok: false }>): string {
  const target = `${outcome.step.action} ${safe(`${outcome.step.backend}/${outcome.step.server}`)}`;
  if ("skipped" in outcome) return `${target}: held back, a new server of this backend could not be placed`;
  return `${target}: ${safe(`'${outcome.command}' -> ${JSON.stringify(outcome.reply)} (${outcome.reason})`)}`;
}

const COLUMNS = ["BACKEND", "SERVER", "ADDRESS", "WEIGHT", "ADMIN", "STATUS", "MANAGED"] as const;

export function formatObserved(socket: string, observed: ObservedState): string {
  const rows: string[][] = [];
  for (const backend of observed.values()) {
    for (const server of backend.servers) {
      rows.push([backend.rawName, server.rawName, serverEndpoint(server), String(server.userWeight), server.admin, server.status ?? "-", managedBy(server)].map(safe));
    }
  }
  const widths = COLUMNS.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  const render = (cells: readonly string[]) => cells.map((cell, column) => cell.padEnd(widths[column]!)).join("  ").trimEnd();
  return [`${safe(socket)}:`, render(COLUMNS), ...rows.map(render)].join("\n");
}

const DIFF_MARKS = { serving: "=", held: "!", missing: "-", unexpected: "+" } as const;

/** `show --diff`: per backend, one line per endpoint, marked as `diff -u` readers expect. */
export function formatDiff(socket: string, backends: readonly BackendDiff[]): string {
  const lines = [`${safe(socket)}:`];
  for (const backend of backends) {
    const wrong = backend.entries.filter((entry) => entry.state !== "serving").length;
    lines.push(`${safe(backend.backend)}: ${!backend.present ? "not in this HAProxy" : wrong === 0 ? "runs the desired servers" : `${wrong} difference(s)`}`);
    for (const entry of backend.entries) {
      const where = entry.server === null ? "" : `  ${entry.server}${entry.state === "held" ? ` (${entry.admin})` : ""}`;
      lines.push(safe(`  ${DIFF_MARKS[entry.state]} ${entry.endpoint}  ${entry.state}${where}`));
    }
  }
  return lines.join("\n");
}

export function serverEndpoint(server: ObservedServer): string {
  const port = server.port ?? "-";
  return server.rawAddress.includes(":") ? `[${server.rawAddress}]:${port}` : `${server.rawAddress}:${port}`;
}

/** `dynamic`: added by hafleet; `slot`: a config server hafleet may fill; `no`: unusable name. */
export function managedBy(server: ObservedServer): string {
  if (server.name === null) return "no";
  return server.dynamic ? "dynamic" : "slot";
}
