import { benchmarkSections } from "../support/haproxy-config.js";
import { startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { sendConnectionPerCommand, sendRawPipelined } from "./baselines.js";

/**
 * Apply benchmark: 100 backends x 100 template slots on one real HAProxy, every slot moved to a
 * new address and port per run. Prints one JSON object per line on stdout.
 *
 *   npx tsc -p tsconfig.json && node dist/test/bench/run.js
 *
 * BENCH_RUNS (default 3) runs per method; the reported `ms` is their median.
 */

/** One way of getting the commands applied; returns elapsed ms once HAProxy answered them all. */
interface Measurement {
  method: string;
  run(socketPath: string, commands: readonly string[]): Promise<number>;
}

// The product's own apply joins this list as one more entry.
const MEASUREMENTS: readonly Measurement[] = [
  { method: "connection-per-command", run: sendConnectionPerCommand },
  { method: "raw-pipelined", run: sendRawPipelined },
];

const BENCH = "apply-10k";
const BACKENDS = 100;
const SLOTS_PER_BACKEND = 100;
const RUNS = positiveInt(process.env["BENCH_RUNS"], 3);
/** A hard ceiling: the slowest method takes ~1-2 s a run, so this only trips on a hang. */
const TIME_LIMIT_MS = 5 * 60_000;

interface SlotTarget {
  slot: string; // "be_i/srvj"
  addr: string;
  port: number;
}

/** Two full states that differ in every slot, so each run really changes 10,000 servers. */
function state(variant: 0 | 1): SlotTarget[] {
  const targets: SlotTarget[] = [];
  for (let backend = 0; backend < BACKENDS; backend += 1) {
    for (let server = 1; server <= SLOTS_PER_BACKEND; server += 1) {
      targets.push({
        slot: `be_${backend}/srv${server}`,
        addr: `127.${variant + 1}.${backend}.${server}`,
        port: (variant + 1) * 10_000 + server,
      });
    }
  }
  return targets;
}

function commandsFor(targets: readonly SlotTarget[]): string[] {
  return targets.map((target) => `set server ${target.slot} addr ${target.addr} port ${target.port}`);
}

/** Outside the timing: a method that answers fast but did not apply must not look good. */
async function verify(haproxy: RunningHaproxy, targets: readonly SlotTarget[], method: string): Promise<void> {
  const actual = new Map<string, string>();
  for (const row of await haproxy.serversState()) {
    actual.set(`${row["be_name"]}/${row["srv_name"]}`, `${row["srv_addr"]}:${row["srv_port"]}`);
  }
  const wrong = targets.filter((target) => actual.get(target.slot) !== `${target.addr}:${target.port}`);
  if (wrong.length > 0) {
    const first = wrong[0];
    throw new Error(
      `${method}: ${wrong.length} of ${targets.length} slots not applied, e.g. ${first?.slot} is ` +
        `${actual.get(first?.slot ?? "") ?? "missing"}, want ${first?.addr}:${first?.port}`,
    );
  }
}

/** Hands out the state that is NOT the one applied last, whichever method applied it. */
function alternator(): () => SlotTarget[] {
  const states = [state(0), state(1)] as const;
  let last = 1;
  return () => {
    last = 1 - last;
    return states[last === 0 ? 0 : 1];
  };
}

async function measure(haproxy: RunningHaproxy, measurement: Measurement, nextState: () => SlotTarget[]): Promise<number[]> {
  const runs: number[] = [];
  for (let index = 0; index < RUNS; index += 1) {
    const targets = nextState();
    runs.push(await measurement.run(haproxy.socket, commandsFor(targets)));
    await verify(haproxy, targets, measurement.method);
  }
  return runs;
}

async function main(): Promise<void> {
  const limit = setTimeout(() => {
    console.error(`bench: over ${TIME_LIMIT_MS} ms, giving up`);
    process.exit(2); // the harness's exit hook kills HAProxy
  }, TIME_LIMIT_MS);
  limit.unref();

  const haproxy = await startHaproxy({ sections: benchmarkSections(BACKENDS, SLOTS_PER_BACKEND) });
  try {
    const nextState = alternator();
    // Leave the config's placeholder address untimed, so every measured run moves slots from one
    // real address to another.
    await sendRawPipelined(haproxy.socket, commandsFor(nextState()));
    const commands = BACKENDS * SLOTS_PER_BACKEND;
    for (const measurement of MEASUREMENTS) {
      const runs = await measure(haproxy, measurement, nextState);
      const ms = median(runs);
      printLine({
        bench: BENCH,
        method: measurement.method,
        commands,
        ms: round(ms),
        commands_per_s: Math.round((commands / ms) * 1000),
        runs_ms: runs.map(round),
      });
    }
  } finally {
    await haproxy.stop();
  }
  // maxRSS is in KiB.
  printLine({ bench: BENCH, peak_rss_mb: round(process.resourceUsage().maxRSS / 1024) });
}

function printLine(record: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(record)}\n`);
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const upper = sorted[middle] ?? 0;
  return sorted.length % 2 === 1 ? upper : ((sorted[middle - 1] ?? 0) + upper) / 2;
}

function round(value: number): number {
  return Math.round(value * 10) / 10;
}

function positiveInt(text: string | undefined, fallback: number): number {
  const value = Number(text);
  return Number.isInteger(value) && value > 0 ? value : fallback;
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exitCode = 1;
});
