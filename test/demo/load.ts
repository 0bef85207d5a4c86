import { Worker } from "node:worker_threads";

/** The demo's traffic through HAProxy's frontend; load-worker.ts sends it. */

export interface LoadSettings {
  host: string;
  port: number;
  ratePerSecond: number;
  /** The bounds: whichever comes first ends the load, even if the driver never says stop. */
  maxRequests: number;
  maxMs: number;
  /** A request without a whole response by then is a failure. */
  timeoutMs: number;
}

export interface LoadCounts {
  sent: number;
  served: number;
  /** Connection errors, timeouts, and any answer but a 200. */
  failed: number;
  /** Failures by reason (`ECONNRESET`, `timeout`, `HTTP 503`...). */
  failures: Record<string, number>;
  /** Served requests by the upstream that answered (`127.0.0.1:PORT`). */
  byUpstream: Record<string, number>;
}

export interface LoadMessage {
  counts: LoadCounts;
}

export class Load {
  private latest: LoadCounts = { sent: 0, served: 0, failed: 0, failures: {}, byUpstream: {} };
  private readonly worker: Worker;
  private readonly ended: Promise<LoadCounts>;

  constructor(settings: LoadSettings) {
    this.worker = new Worker(new URL("./load-worker.js", import.meta.url), { workerData: settings });
    this.worker.on("message", (message: LoadMessage) => (this.latest = message.counts));
    this.ended = new Promise((resolve, reject) => {
      this.worker.once("error", reject);
      this.worker.once("exit", () => resolve(this.latest));
    });
  }

  counts(): LoadCounts {
    return this.latest;
  }

  /** Stops sending, waits for the requests in flight, and gives the final counts. */
  async stop(): Promise<LoadCounts> {
    this.worker.postMessage("stop");
    return this.ended;
  }

  /** Abandons the requests in flight (on Ctrl-C). */
  async abort(): Promise<void> {
    await this.worker.terminate();
  }
}
