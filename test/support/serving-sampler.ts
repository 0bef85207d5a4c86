import { serving } from "./apply.js";
import type { RunningHaproxy } from "./haproxy.js";

/** One read of a backend in HAProxy's own `show servers state`, tagged with the phase it began in. */
export interface ServingSample {
  phase: string;
  /** Rows of the backend (slots and added servers, serving or not); null: HAProxy did not answer. */
  servers: number | null;
  serving: number | null;
}

export interface ServingSampler {
  readonly samples: readonly ServingSample[];
  /**
   * Tags the samples begun from now on. A read under way keeps the phase it began in, so a
   * sample taken before a kill never counts as one of the restarted process.
   */
  enter(phase: string): void;
  /** Ends the loop, then takes one last sample: what HAProxy runs at the end is always in. */
  stop(): Promise<void>;
}

const LIMITS = { samples: 20_000, ms: 180_000 };

/**
 * Reads a backend of a real HAProxy over and over in the background, for "never fewer than"
 * assertions over a whole scenario, HAProxy's deaths and restarts included. Stops by itself
 * after LIMITS, so a test that fails before stop() leaves no loop running.
 */
export function startServingSampler(h: RunningHaproxy, backend: string, intervalMs = 20): ServingSampler {
  const samples: ServingSample[] = [];
  let phase = "start";
  let running = true;
  const deadline = Date.now() + LIMITS.ms;
  const sample = async (): Promise<void> => {
    const tag = phase;
    try {
      const rows = await h.serversState(backend);
      samples.push({ phase: tag, servers: rows.length, serving: serving(rows, backend).length });
    } catch {
      samples.push({ phase: tag, servers: null, serving: null });
    }
  };
  const loop = (async () => {
    while (running && samples.length < LIMITS.samples && Date.now() < deadline) {
      await sample();
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  })();
  let stopped: Promise<void> | null = null;
  return {
    samples,
    enter: (next) => {
      phase = next;
    },
    stop: () => {
      running = false;
      stopped ??= loop.then(sample);
      return stopped;
    },
  };
}

/** The fewest servers serving in the samples where HAProxy answered (Infinity when it never did). */
export function fewestServing(samples: readonly ServingSample[]): number {
  return Math.min(...samples.flatMap((entry) => (entry.serving === null ? [] : [entry.serving])));
}
