import type { Logger } from "pino";
import type { ControllerConfig } from "./config/controller-config.js";
import { Debouncer } from "./core/debouncer.js";
import { DesiredStore } from "./core/desired-store.js";
import { ConsulSource } from "./discovery/consul/consul-source.js";
import { FileSource } from "./discovery/file-source.js";
import type { DiscoverySource } from "./discovery/service-snapshot.js";
import { FleetServer } from "./server/fleet-server.js";

export interface RunningController {
  port: number;
  store: DesiredStore;
  server: FleetServer;
  close(): Promise<void>;
}

/**
 * Wires discovery -> desired store -> gRPC server: one watch per (service, tag), changes
 * debounced, then every idle agent is sent what it lacks.
 */
export async function startController(config: ControllerConfig, logger: Logger, source: DiscoverySource = sourceFor(config, logger)): Promise<RunningController> {
  const store = new DesiredStore(config.backends, config.guards.maxDropShare);
  const server = new FleetServer(store, { heartbeatMs: config.agents.heartbeatMs, deadAfterMs: config.agents.deadAfterMs, logger });
  const debouncer = new Debouncer(config.debounce.quietMs, config.debounce.maxMs, () => server.desiredChanged());
  const rechecks = new Map<string, NodeJS.Timeout>();
  const stops = store.watches().map(({ service, tag }) =>
    source.watch(service, tag, {
      snapshot: (snapshot) => {
        for (const dropped of snapshot.dropped) logger.warn({ service, instance: dropped.id, reason: dropped.reason }, "instance dropped");
        const { changed, held } = store.apply(snapshot);
        for (const { backend, reason } of held) logger.warn({ service, backend, reason }, "discovery answer held: the last good set stands");
        // A held answer is read again until one is taken: discovery may not change again.
        if (held.length > 0 && !rechecks.has(snapshot.key)) {
          rechecks.set(snapshot.key, setInterval(() => source.refresh(service, tag), config.guards.recheckMs));
        } else if (held.length === 0) {
          clearInterval(rechecks.get(snapshot.key));
          rechecks.delete(snapshot.key);
        }
        if (changed.length > 0) {
          logger.info({ service, backends: changed }, "desired state changed");
          debouncer.trigger();
        }
      },
      error: (key, error) => logger.warn({ service: key, err: error.message }, "discovery failed; the last good state stands, retrying"),
    }),
  );
  const port = await server.listen(config.listen);
  logger.info({ listen: config.listen, port, watches: store.watches().length }, "controller listening");
  return {
    port,
    store,
    server,
    close: async () => {
      debouncer.cancel();
      rechecks.forEach((timer) => clearInterval(timer));
      stops.forEach((stop) => stop());
      await source.close();
      await server.close();
    },
  };
}

function sourceFor(config: ControllerConfig, logger: Logger): DiscoverySource {
  const { discovery } = config;
  if ("file" in discovery) return new FileSource(discovery.file, { logger });
  return new ConsulSource({ ...discovery.consul, logger });
}
