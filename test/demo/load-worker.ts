import { request } from "node:http";
import { parentPort, workerData } from "node:worker_threads";
import type { LoadCounts, LoadMessage, LoadSettings } from "./load.js";

/*
 * The demo's traffic, on a thread of its own so that the driver's polling never delays a
 * request. A fixed rate, and a new connection for every request: with keep-alive, a client's
 * requests would keep reaching whichever server its connection went to, and a server could
 * leave or join without a single request noticing.
 */

const TICK_MS = 10;
const REPORT_MS = 200;

const settings = workerData as LoadSettings;
const counts: LoadCounts = { sent: 0, served: 0, failed: 0, failures: {}, byUpstream: {} };
const startedAt = performance.now();
let inFlight = 0;
let sending = true;

const report = (): void => parentPort!.postMessage({ counts } satisfies LoadMessage);
const reporter = setInterval(report, REPORT_MS);
const ticker = setInterval(tick, TICK_MS);
parentPort!.once("message", stopSending);

function tick(): void {
  const elapsedMs = performance.now() - startedAt;
  const due = Math.min(settings.maxRequests, Math.floor((elapsedMs * settings.ratePerSecond) / 1000));
  while (counts.sent < due) send();
  if (counts.sent >= settings.maxRequests || elapsedMs >= settings.maxMs) stopSending();
}

function stopSending(): void {
  sending = false;
  clearInterval(ticker);
  parentPort!.removeListener("message", stopSending);
  finishWhenIdle();
}

function finishWhenIdle(): void {
  if (sending || inFlight > 0) return;
  clearInterval(reporter);
  report();
}

function send(): void {
  counts.sent += 1;
  inFlight += 1;
  let settled = false;
  const settle = (upstream: string | null, failure: string | null): void => {
    if (settled) return;
    settled = true;
    inFlight -= 1;
    if (upstream !== null) {
      counts.served += 1;
      counts.byUpstream[upstream] = (counts.byUpstream[upstream] ?? 0) + 1;
    } else {
      counts.failed += 1;
      const reason = failure ?? "unknown";
      counts.failures[reason] = (counts.failures[reason] ?? 0) + 1;
    }
    finishWhenIdle();
  };
  const outgoing = request(
    { host: settings.host, port: settings.port, path: "/", agent: false, headers: { connection: "close" }, timeout: settings.timeoutMs },
    (response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => (body += chunk));
      response.on("error", (error: NodeJS.ErrnoException) => settle(null, error.code ?? error.message));
      response.on("end", () => {
        if (response.statusCode !== 200) settle(null, `HTTP ${response.statusCode}`);
        else settle(body.trim().split(" ")[1] ?? "?", null);
      });
    },
  );
  outgoing.on("timeout", () => outgoing.destroy(Object.assign(new Error("timeout"), { code: "timeout" })));
  outgoing.on("error", (error: NodeJS.ErrnoException) => settle(null, error.code ?? error.message));
  outgoing.end();
}
