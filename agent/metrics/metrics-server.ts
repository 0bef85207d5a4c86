import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Logger } from "pino";
import { InvalidInputError, listenFailure } from "../errors.js";
import { parseListen } from "../../controller/config/config-values.js";
import { isLoopbackHost, listenHttp, type RunningHttpServer } from "./http-endpoint.js";
import type { MetricsSource } from "./metrics-registry.js";

export interface MetricsServerOptions {
  /** Serve on a non-loopback address too: the controller's choice, never the agent's default. */
  allowRemote?: boolean;
  /** The setting that names the address, for an error that says what to change. */
  setting?: string;
}

const TEXT = "text/plain; charset=utf-8";

/**
 * GET /metrics, the sources' expositions one after the other (their metric names must differ);
 * anything else is 404, or 405 for another method. `listen` is HOST:PORT, port 0 picks one.
 */
export async function startMetricsServer(listen: string, sources: readonly MetricsSource[], logger: Logger, options: MetricsServerOptions = {}): Promise<RunningHttpServer> {
  const { host, port } = parseListen(listen);
  if (options.allowRemote !== true && !isLoopbackHost(host)) {
    throw new InvalidInputError("metrics listen address", [
      {
        path: "listen",
        message: "must be a loopback address (127.0.0.0/8, ::1, localhost): the agent's local endpoints bind loopback only, since its metrics name every backend and socket; allowRemote lifts this",
        value: listen,
      },
    ]);
  }
  const server = createServer((request, response) => void respond(request, response, sources, logger));
  const running = await listenHttp(server, host, port).catch((error: unknown) => {
    throw listenFailure(listen, error, options.setting ?? "--metrics-listen (metricsListen in a config file)");
  });
  logger.info({ listen, port: running.port }, "metrics listening");
  return running;
}

async function respond(request: IncomingMessage, response: ServerResponse, sources: readonly MetricsSource[], logger: Logger): Promise<void> {
  const path = new URL(request.url ?? "/", "http://metrics").pathname;
  if (path !== "/metrics") return send(response, 404, TEXT, `no such resource: ${path} (metrics are at /metrics)\n`);
  if (request.method !== "GET") {
    response.setHeader("allow", "GET");
    return send(response, 405, TEXT, "/metrics takes GET\n");
  }
  try {
    const rendered = await Promise.all(sources.map((source) => source.render()));
    const contentType = rendered[0]?.contentType ?? TEXT;
    if (rendered.some((entry) => entry.contentType !== contentType)) throw new Error(`metrics sources render different formats: ${rendered.map((entry) => entry.contentType).join(", ")}`);
    send(response, 200, contentType, rendered.map((entry) => entry.body).join(""));
  } catch (error) {
    logger.error({ err: error }, "cannot render metrics");
    send(response, 500, TEXT, "cannot render metrics; see the log\n");
  }
}

function send(response: ServerResponse, status: number, contentType: string, body: string): void {
  response.writeHead(status, { "content-type": contentType, "cache-control": "no-store" });
  response.end(body);
}
