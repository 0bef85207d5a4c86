import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { parseDesiredState, type DesiredState } from "../../agent/model/desired-state.js";
import { LedgerStore } from "../../agent/reconcile/ledger-store.js";
import { reconcileSocket } from "../../agent/reconcile/reconciler.js";
import { RuntimeClient } from "../../agent/runtime/runtime-client.js";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";
import { benchmarkSections } from "../support/haproxy-config.js";
import { startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { sendConnectionPerCommand, sendRawPipelined } from "./baselines.js";
import { armTimeLimit, median, printLine, round } from "./report.js";

/**
 * Apply benchmark on one real HAProxy: 100 backends x 100 template slots, and a desired state
 * of 10,000 servers applied to empty slots. Side by side in one run:
 *  - hafleet: the whole `apply` (read back 10k servers, plan, apply in two pipelined
 *    batches, read back again to verify);
 *  - connection-per-command: the commands of hafleet's plan, sent the original script's way;
 *  - raw-pipelined: the same commands written on one connection (the physical limit).
 * Each run starts from empty slots and alternates between two states, so every run changes
 * all 10,000 servers; every run is checked against HAProxy's own `show servers state`.
 * Each method first gets one untimed warm-up run: the agent is a long-running process, and
 * a short benchmark would otherwise mostly time V8 compiling the parsers.
 *
 *   npm run bench      (BENCH_RUNS, default 3, runs per method; `ms` is their median)
 */

const BENCH = "apply-10k";
const BACKENDS = 100;
const SLOTS_PER_BACKEND = 100;
const RUNS = positiveInt(process.env["BENCH_RUNS"], 3);
/** A hard ceiling: the slowest method takes a few seconds a run, so this only trips on a hang. */
const TIME_LIMIT_MS = 5 * 60_000;

interface Method {
  method: string;
  /** Applies `desired` (whose plan from empty slots is `commands`); returns elapsed ms. */
  run(haproxy: RunningHaproxy, desired: DesiredState, commands: readonly string[]): Promise<number>;
}

const METHODS: readonly Method[] = [
  { method: "hafleet", run: (haproxy, desired) => hafleetApply(haproxy, desired) },
  { method: "connection-per-command", run: (haproxy, _, commands) => sendConnectionPerCommand(haproxy.socket, commands) },
  { method: "raw-pipelined", run: (haproxy, _, commands) => sendRawPipelined(haproxy.socket, commands) },
];

function desiredState(variant: 0 | 1): DesiredState {
  const backends = Array.from({ length: BACKENDS }, (_, backend) => ({
    name: `be_${backend}`,
    servers: Array.from({ length: SLOTS_PER_BACKEND }, (_, server) => ({
      address: `127.${variant + 1}.${backend}.${server + 1}`,
      port: (variant + 1) * 10_000 + server + 1,
    })),
  }));
  return parseDesiredState({ version: `bench-${variant}`, backends }, "bench");
}

const silent = pino({ level: "silent" });

async function hafleetApply(haproxy: RunningHaproxy, desired: DesiredState): Promise<number> {
  const stateDir = await mkdtemp(join(tmpdir(), "hafleet-bench-"));
  const client = new RuntimeClient(parseSocketAddress(haproxy.socket));
  try {
    const options = { drainMs: 5_000, waitMs: 0, pollMs: 50, allowEmpty: false, logger: silent };
    const started = performance.now();
    const report = await reconcileSocket(client, desired, new LedgerStore(stateDir, client.name), { ...options, dryRun: false });
    const elapsed = performance.now() - started;
    if (!report.converged) throw new Error("hafleet: apply did not converge");
    return elapsed;
  } finally {
    client.close();
    await rm(stateDir, { recursive: true, force: true });
  }
}

/** The commands of hafleet's plan from empty slots: what the baselines send. */
async function plannedCommands(haproxy: RunningHaproxy, desired: DesiredState): Promise<string[]> {
  const client = new RuntimeClient(parseSocketAddress(haproxy.socket));
  try {
    const options = { drainMs: 5_000, waitMs: 0, pollMs: 50, allowEmpty: false, logger: silent, dryRun: true };
    const report = await reconcileSocket(client, desired, new LedgerStore(tmpdir(), "unused-dry-run"), options);
    return report.plan.steps.flatMap((step) => [...step.prepare, ...step.commit].map((command) => command.text));
  } finally {
    client.close();
  }
}

/** Untimed: every slot back to maintenance, i.e. free for the next run. */
async function emptySlots(haproxy: RunningHaproxy): Promise<void> {
  const commands: string[] = [];
  for (let backend = 0; backend < BACKENDS; backend += 1) {
    for (let server = 1; server <= SLOTS_PER_BACKEND; server += 1) commands.push(`set server be_${backend}/srv${server} state maint`);
  }
  await sendRawPipelined(haproxy.socket, commands);
}

/** Outside the timing: a method that answers fast but did not apply must not look good. */
async function verify(haproxy: RunningHaproxy, desired: DesiredState, method: string): Promise<void> {
  const serving = new Set<string>();
  for (const row of await haproxy.serversState()) {
    if ((Number(row["srv_admin_state"]) & 0x7b) === 0) serving.add(`${row["be_name"]}/${row["srv_addr"]}:${row["srv_port"]}`);
  }
  const wanted = desired.backends.flatMap((backend) => backend.servers.map((server) => `${backend.name}/${server.address}:${server.port}`));
  const missing = wanted.filter((key) => !serving.has(key));
  if (missing.length > 0 || serving.size !== wanted.length) {
    throw new Error(`${method}: ${missing.length} of ${wanted.length} servers not serving (e.g. ${missing[0]}), ${serving.size} serving`);
  }
}

async function main(): Promise<void> {
  armTimeLimit("bench", TIME_LIMIT_MS);

  const haproxy = await startHaproxy({ sections: benchmarkSections(BACKENDS, SLOTS_PER_BACKEND), quiet: true });
  try {
    const states = [desiredState(0), desiredState(1)] as const;
    const commands = [await plannedCommands(haproxy, states[0]), await plannedCommands(haproxy, states[1])] as const;
    let run = 0;
    for (const method of METHODS) {
      const runs: number[] = [];
      for (let index = 0; index <= RUNS; index += 1, run += 1) {
        const variant = run % 2;
        await emptySlots(haproxy);
        const ms = await method.run(haproxy, states[variant]!, commands[variant]!);
        await verify(haproxy, states[variant]!, method.method);
        if (index > 0) runs.push(ms);
      }
      const ms = median(runs);
      printLine({
        bench: BENCH,
        method: method.method,
        servers: BACKENDS * SLOTS_PER_BACKEND,
        commands: commands[0].length,
        ms: round(ms),
        commands_per_s: Math.round((commands[0].length / ms) * 1000),
        runs_ms: runs.map(round),
        warmup_runs: 1,
      });
    }
  } finally {
    await haproxy.stop();
  }
  // maxRSS is in KiB.
  printLine({ bench: BENCH, peak_rss_mb: round(process.resourceUsage().maxRSS / 1024) });
}

function positiveInt(text: string | undefined, fallback: number): number {
  const value = Number(text);
  return Number.isInteger(value) && value > 0 ? value : fallback;
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exitCode = 1;
});
