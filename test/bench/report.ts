/** What every benchmark shares: JSON lines on stdout, rounding, a hard time limit. */

export function printLine(record: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(record)}\n`);
}

export function round(value: number): number {
  return Math.round(value * 10) / 10;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const upper = sorted[middle] ?? 0;
  return sorted.length % 2 === 1 ? upper : ((sorted[middle - 1] ?? 0) + upper) / 2;
}

/** A benchmark that hangs must not hold CI: past the limit the process exits (its exit hooks kill what it started). */
export function armTimeLimit(name: string, ms: number): void {
  const limit = setTimeout(() => {
    console.error(`${name}: over ${ms} ms, giving up`);
    process.exit(2);
  }, ms);
  limit.unref();
}
