import { once } from "node:events";
import type { Logger } from "pino";
import { parseFlags } from "../../agent/cli/args.js";
import { UsageError } from "../../agent/errors.js";
import { configFromFlags, loadControllerConfig, quickStartFlagOptions } from "../config/load-config.js";
import { startController } from "../controller.js";

export const CONTROLLER_HELP = `Usage: hafleet controller --config FILE
       hafleet controller [--listen HOST:PORT] (--consul URL | --catalog-file FILE) --map SERVICE=BACKEND [--map ...]

Watches service discovery (Consul's blocking queries, or a catalog file) and streams the
desired backend servers to every connected 'hafleet-agent run' over gRPC, tracking each
agent's acks and nacks. Runs until SIGTERM or SIGINT.

  --config FILE          controller configuration, YAML or JSON (see README)
  --listen HOST:PORT     gRPC listen address (default 127.0.0.1:7900)
  --consul URL           Consul's HTTP API, e.g. http://127.0.0.1:8500
  --consul-token TOKEN   Consul ACL token
  --consul-dc DC         Consul datacenter
  --catalog-file FILE    a JSON catalog instead of Consul: {"services":{"NAME":[{"address","port"}]}}
  --map SERVICE=BACKEND  feed HAProxy backend BACKEND from SERVICE (SERVICE#TAG=BACKEND for a tag)
  -h, --help             this text`;

export async function controllerCommand(args: string[], log: Logger): Promise<number> {
  const flags = parseFlags("controller", args, { config: { type: "string" }, ...quickStartFlagOptions });
  const { config: file, ...quick } = flags;
  if (file !== undefined && Object.keys(quick).length > 0) throw new UsageError("give either --config or the quick-start flags, not both");
  const config = file === undefined ? configFromFlags(quick) : await loadControllerConfig(file);
  const controller = await startController(config, log);
  await Promise.race([once(process, "SIGTERM"), once(process, "SIGINT")]);
  log.info("shutting down");
  await controller.close();
  return 0;
}
