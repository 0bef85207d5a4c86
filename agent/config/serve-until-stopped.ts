import type { Logger } from "pino";
import { HafleetError } from "../errors.js";

export interface Running {
  stop(): Promise<void>;
}

export interface ServeOptions<C> {
  initial: C;
  /** Reads the configuration again; null when it came from flags, so there is nothing to re-read. */
  reload: (() => Promise<C>) | null;
  start: (config: C) => Promise<Running>;
  log: Logger;
}

/**
 * Runs a service until SIGTERM or SIGINT. SIGHUP re-reads its configuration and restarts the
 * service with it; a configuration that cannot be read is logged and the running one stays,
 * and one that cannot start is logged and the previous one is started again.
 */
export async function serveUntilStopped<C>(options: ServeOptions<C>): Promise<void> {
  const { log } = options;
  // Listening before starting: a signal during a (long) start is acted on once it is done.
  const signals = new SignalQueue();
  try {
    let config = options.initial;
    let running = await options.start(config);
    for (;;) {
      const signal = await signals.next();
      if (signal !== "SIGHUP") {
        // A second SIGTERM while stopping then ends the process at once, as without a handler.
        signals.dispose();
        log.info({ signal }, "stopping");
        await running.stop();
        return;
      }
      const next = await reread(options);
      if (next === null) continue;
      await running.stop();
      try {
        running = await options.start(next);
        config = next;
        log.info("restarted with the new configuration");
      } catch (error) {
        log.error({ err: loggable(error) }, "the new configuration did not start; starting the previous one again");
        running = await options.start(config);
      }
    }
  } finally {
    signals.dispose();
  }
}

async function reread<C>({ reload, log }: ServeOptions<C>): Promise<C | null> {
  if (reload === null) {
    log.warn("SIGHUP ignored: started without --config, there is no file to re-read");
    return null;
  }
  try {
    const config = await reload();
    log.info("SIGHUP: configuration re-read, restarting with it");
    return config;
  } catch (error) {
    log.error({ err: loggable(error) }, "SIGHUP: the new configuration is refused; the running one stays");
    return null;
  }
}

/** A user's mistake as its one-line message; only an unexpected error keeps its stack for the log. */
function loggable(error: unknown): unknown {
  return error instanceof HafleetError ? error.message : error;
}

const SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP"] as const;

/** Signals in arrival order, none lost while the previous one is being handled. */
class SignalQueue {
  private readonly arrived: NodeJS.Signals[] = [];
  private waiting: ((signal: NodeJS.Signals) => void) | null = null;
  private readonly onSignal = (signal: NodeJS.Signals): void => {
    const waiting = this.waiting;
    this.waiting = null;
    if (waiting) waiting(signal);
    else this.arrived.push(signal);
  };

  constructor() {
    for (const name of SIGNALS) process.on(name, this.onSignal);
  }

  next(): Promise<NodeJS.Signals> {
    const first = this.arrived.shift();
    if (first !== undefined) return Promise.resolve(first);
    return new Promise((resolve) => {
      this.waiting = resolve;
    });
  }

  dispose(): void {
    for (const name of SIGNALS) process.off(name, this.onSignal);
  }
}
