import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { parseFlags } from "../../agent/cli/args.js";
import { checkConfigFile } from "../../agent/config/check-config-file.js";
import { serveUntilStopped } from "../../agent/config/serve-until-stopped.js";
import { UsageError } from "../../agent/errors.js";
import { checkedControllerConfig } from "../config/check-controller-files.js";
import { configFromFlags, loadControllerConfig, quickStartFlagOptions } from "../config/load-config.js";
import { startController } from "../controller.js";
import { packageVersion } from "../../agent/config/package-version.js";
import { readTlsFiles } from "../../agent/tls/tls-files.js";

export const CONTROLLER_HELP = `Usage: hafleet controller --config FILE
       hafleet controller [--listen HOST:PORT] [--http HOST:PORT] [--token-file FILE] (--consul URL | --catalog-file FILE) --map SERVICE=BACKEND [--map ...]
       hafleet controller --check-config FILE

Watches service discovery (Consul's blocking queries, or a catalog file) and streams the
desired backend servers to every connected 'hafleet-agent run' over gRPC, tracking each
agent's acks and nacks. Runs until SIGTERM or SIGINT; SIGHUP re-reads --config (a file that
is not valid is logged and the running configuration stays; agents reconnect to the new one).

  --config FILE          controller configuration, YAML or JSON (see README)
  --check-config FILE    check a configuration file, print 'FILE: ok' or every problem with its
                         line and field, and exit 0 (valid) or 2 (not)
  --listen HOST:PORT     gRPC listen address (default 127.0.0.1:7900)
  --http HOST:PORT       the status API, page and /metrics (default 127.0.0.1:7901; 'off': none)
  --token-file FILE      the token (16+ characters) that freeze, rollout and forget must send;
                         without one the controller takes no actions over HTTP
  --tls-ca/--tls-cert/--tls-key FILE
                         mTLS: the fleet CA, and this controller's certificate and key (see
                         'hafleet certs'); agents are known by their certificate
  --insecure             plaintext on a non-loopback --listen (logs a warning): any host that
                         reaches the port can pose as any agent
  --consul URL           Consul's HTTP API, e.g. http://127.0.0.1:8500
  --consul-token TOKEN   Consul ACL token
  --consul-dc DC         Consul datacenter
  --catalog-file FILE    a JSON catalog instead of Consul: {"services":{"NAME":[{"address","port"}]}}
  --map SERVICE=BACKEND  feed HAProxy backend BACKEND from SERVICE (SERVICE#TAG=BACKEND for a tag)
  -h, --help             this text`;

export async function controllerCommand(args: string[], log: Logger): Promise<number> {
  const flags = parseFlags("controller", args, { config: { type: "string" }, "check-config": { type: "string" }, ...quickStartFlagOptions });
  const { config: file, "check-config": check, ...quick } = flags;
  const quickGiven = Object.keys(quick).length > 0;
  if (check !== undefined) {
    if (file !== undefined || quickGiven) throw new UsageError("--check-config takes no other flag");
    return checkConfigFile(check, async (path) => checkedControllerConfig(await loadControllerConfig(path), path, Date.now()));
  }
  if (file !== undefined && quickGiven) throw new UsageError("give either --config or the quick-start flags, not both");
  routeGrpcLogs(log);
  await serveUntilStopped({
    // The same checks as --check-config: a start must not fail later, or worse, half-work.
    initial: await checkedControllerConfig(file === undefined ? configFromFlags(quick) : await loadControllerConfig(file), file ?? "command line", Date.now()),
    // The certificate files are checked at the re-read too: a restart on a broken key would fail,
    // and so would the fallback to the previous settings, which read the same files.
    reload:
      file === undefined
        ? null
        : async () => {
            const config = await loadControllerConfig(file);
            if (config.tls !== undefined) readTlsFiles(config.tls, Date.now());
            return config;
          },
    start: async (config) => {
      const controller = await startController(config, log, { version: packageVersion() });
      return { stop: () => controller.close() };
    },
    log,
  });
  return 0;
}

/**
 * grpc-js writes its own errors to stderr, unstructured; they go to our log instead. A failed
 * bind is reported by the listen itself (one line naming the address), so its echo is debug.
 */
function routeGrpcLogs(log: Logger): void {
  const text = (args: unknown[]): string => args.map(String).join(" ");
  grpc.setLogger({
    error: (...args: unknown[]) => {
      const message = text(args);
      if (/No address added/.test(message)) log.debug({ grpc: message }, "grpc-js");
      else log.warn({ grpc: message }, "grpc-js");
    },
    info: (...args: unknown[]) => log.info({ grpc: text(args) }, "grpc-js"),
    debug: (...args: unknown[]) => log.debug({ grpc: text(args) }, "grpc-js"),
  });
}
