import type { Logger } from "pino";
import { parseFlags } from "../../agent/cli/args.js";
import { checkConfigFile } from "../../agent/config/check-config-file.js";
import { serveUntilStopped } from "../../agent/config/serve-until-stopped.js";
import { UsageError } from "../../agent/errors.js";
import { configFromFlags, loadControllerConfig, quickStartFlagOptions } from "../config/load-config.js";
import { startController } from "../controller.js";
import { packageVersion } from "../../agent/config/package-version.js";
import { readTlsFiles } from "../../agent/tls/tls-files.js";

export const CONTROLLER_HELP = `Usage: hafleet controller --config FILE
       hafleet controller [--listen HOST:PORT] [--http HOST:PORT] (--consul URL | --catalog-file FILE) --map SERVICE=BACKEND [--map ...]
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
    return checkConfigFile(check, loadControllerConfig);
  }
  if (file !== undefined && quickGiven) throw new UsageError("give either --config or the quick-start flags, not both");
  await serveUntilStopped({
    initial: file === undefined ? configFromFlags(quick) : await loadControllerConfig(file),
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
