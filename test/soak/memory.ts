import { readFile } from "node:fs/promises";

/*
 * Memory of the soak's long-lived processes, read where the kernel and the processes tell it:
 * resident set from /proc/PID/status (VmRSS), and for the Node.js ones the V8 heap in use from
 * their own /metrics (prom-client's nodejs_heap_size_used_bytes). "Flat" is judged from the
 * slope against events done, fitted over every sample after the warm-up, not from two points:
 * heap readings swing by megabytes between collections.
 */

export interface ProcessMemory {
  rssKb: number;
  /** Null for a process without /metrics (HAProxy). */
  heapKb: number | null;
}

export interface MemorySample {
  atMs: number;
  /** Scale events landed by then. */
  events: number;
  processes: Record<string, ProcessMemory>;
}

export interface MemoryTrend {
  /** The first sample after the warm-up, the last, and the largest of all after the warm-up, in KB. */
  start: number;
  end: number;
  max: number;
  /** Least-squares growth per 1,000 events, in KB. */
  kbPer1000Events: number;
  /**
   * The same through the lowest sample of each tenth of those events: the floor the garbage
   * collector comes back down to, which a leak raises and a heap's sawtooth does not.
   */
  floorKbPer1000Events: number;
}

const FLOOR_WINDOWS = 10;

export async function rssKb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (match === null) throw new Error(`/proc/${pid}/status has no VmRSS line (a zombie, or not Linux)`);
  return Number(match[1]);
}

export async function heapUsedKb(metricsUrl: string): Promise<number> {
  const response = await fetch(metricsUrl);
  const text = await response.text();
  if (response.status !== 200) throw new Error(`GET ${metricsUrl}: HTTP ${response.status}: ${text.slice(0, 200)}`);
  const match = /^nodejs_heap_size_used_bytes(?:\{[^}]*\})? ([0-9.e+]+)$/m.exec(text);
  const bytes = Number(match?.[1]);
  if (match === null || !Number.isFinite(bytes)) throw new Error(`GET ${metricsUrl}: no nodejs_heap_size_used_bytes sample`);
  return Math.round(bytes / 1024);
}

/** One process to sample: its pid, and its /metrics URL when it has one. */
export interface MemoryTarget {
  pid: number;
  metricsUrl: string | null;
}

export async function sampleMemory(targets: Record<string, MemoryTarget>, atMs: number, events: number): Promise<MemorySample> {
  const entries = await Promise.all(
    Object.entries(targets).map(async ([name, target]) => {
      const [rss, heap] = await Promise.all([rssKb(target.pid), target.metricsUrl === null ? null : heapUsedKb(target.metricsUrl)]);
      return [name, { rssKb: rss, heapKb: heap }] as const;
    }),
  );
  return { atMs, events, processes: Object.fromEntries(entries) };
}

/** The trend of one reading of one process over the samples taken at or after `fromEvents`; null with fewer than 2. */
export function trend(samples: readonly MemorySample[], process: string, reading: keyof ProcessMemory, fromEvents: number): MemoryTrend | null {
  const points = samples.flatMap((sample) => {
    const value = sample.processes[process]?.[reading];
    return sample.events >= fromEvents && typeof value === "number" ? [{ x: sample.events, y: value }] : [];
  });
  if (points.length < 2) return null;
  const first = points[0]!.x;
  const width = (points[points.length - 1]!.x - first) / FLOOR_WINDOWS;
  const floors = new Map<number, { x: number; y: number }>();
  for (const point of points) {
    const window = width === 0 ? 0 : Math.min(FLOOR_WINDOWS - 1, Math.floor((point.x - first) / width));
    const lowest = floors.get(window);
    if (lowest === undefined || point.y < lowest.y) floors.set(window, point);
  }
  return {
    start: points[0]!.y,
    end: points[points.length - 1]!.y,
    max: Math.max(...points.map((point) => point.y)),
    kbPer1000Events: Math.round(slope(points) * 1000),
    floorKbPer1000Events: Math.round(slope([...floors.values()]) * 1000),
  };
}

/** Least squares; 0 when x does not vary (a single point included). */
function slope(points: ReadonlyArray<{ x: number; y: number }>): number {
  const meanX = points.reduce((sum, point) => sum + point.x, 0) / points.length;
  const meanY = points.reduce((sum, point) => sum + point.y, 0) / points.length;
  const sxx = points.reduce((sum, point) => sum + (point.x - meanX) ** 2, 0);
  const sxy = points.reduce((sum, point) => sum + (point.x - meanX) * (point.y - meanY), 0);
  return sxx === 0 ? 0 : sxy / sxx;
}
