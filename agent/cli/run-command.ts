import type { Logger } from "pino";
import { plaintextWarning } from "../config/agent-config.js";
import { prepareAgentFromFile, prepareAgentFromFlags, runFlagOptions, type PreparedAgent } from "../config/load-agent-config.js";
import { packageVersion } from "../config/package-version.js";
import { serveUntilStopped, type Running } from "../config/serve-until-stopped.js";
import { UsageError } from "../errors.js";
import { managedBackends } from "../model/manage-patterns.js";
import { parseSocketAddress } from "../runtime/socket-address.js";
import { AgentRunner } from "../run/agent-runner.js";
import { RuntimeApplier } from "../run/applier.js";
import { AgentMetrics } from "../metrics/agent-metrics.js";
import { startMetricsServer } from "../metrics/metrics-server.js";
import { parseFlags } from "./args.js";
import { EXIT } from "./run-cli.js";

export const RUN_HELP = `Usage: hafleet-agent run --config FILE
       hafleet-agent run --controller HOST:PORT [--controller ...] --socket SOCKET [--socket ...] [options]

Runs the agent: keeps every HAProxy given by --socket in step with the desired backend servers
the hafleet controller streams to it. The desired state is stored in the state dir and applied
at start, before any controller answers, and again periodically; losing the controller never
changes HAProxy. Runs until SIGTERM or SIGINT; SIGHUP re-reads --config (a file that is not
valid is logged and the running settings stay).

  --config FILE     the settings below as a YAML or JSON file (see 'hafleet-agent check-config');
                    not together with the flags
  --controller A    controller address HOST:PORT (repeat: tried in order, the next one after
                    each failure)
  --socket S        admin socket: a unix path, or HOST:PORT (repeat for several HAProxy)
  --id ID           this agent's id (1-128 letters, digits, '.', '_' or '-'); default: this
                    host's name, as in a config file
  --label K=V       a label the controller selects agents by, e.g. region=eu-west-1 (repeat)
  --manage P        a backend this agent may change: a name, or a pattern where '*' stands for
                    any characters, e.g. be_web_* (repeat); a push for any other backend is
                    nacked and HAProxy is left alone. None given: every backend
  --state-dir DIR   where the desired state and the drain ledgers are kept
                    (default /var/lib/hafleet)
  --drain-period D  how long a removed server drains before maintenance (default 5s;
                    sooner when it has no sessions left)
  --resync D        how often to re-apply the stored desired state, repairing drift such as
                    a restarted HAProxy or a server changed by hand (default 10s)
  --metrics-listen A  Prometheus /metrics on this loopback HOST:PORT, e.g. 127.0.0.1:7902
  --tls-ca/--tls-cert/--tls-key FILE
                    mTLS to the controller: the fleet CA, this agent's certificate (its id in
                    the SAN, see 'hafleet certs issue --agent ID') and key; re-read at each
                    reconnect, so a renewed certificate needs no restart
  --insecure        plaintext to a controller off loopback (anyone in the path could push)
  hybrid mode, as for apply (one --socket): --config-template T --config-out FILE
                    --state-file F --master-socket S [--spare-slots N] [--var KEY=VALUE ...]
  -h, --help        this text

Exit codes: 0 stopped by SIGTERM/SIGINT; 2 invalid input (settings, or a file they name:
TLS files, the template, the state dir); 3 this host stands in the way (the metrics port taken).`;

export async function runCommand(args: string[], log: Logger): Promise<number> {
  const { config: file, ...flags } = parseFlags("run", args, { config: { type: "string" }, ...runFlagOptions });
  if (file !== undefined && Object.keys(flags).length > 0) throw new UsageError("give either --config or the run flags, not both");
  if (file === undefined && (flags.controller === undefined || flags.socket === undefined)) {
    throw new UsageError("run needs --config FILE, or --controller and --socket");
  }
  const reload = file === undefined ? null : () => prepareAgentFromFile(file);
  const initial = reload === null ? await prepareAgentFromFlags(flags) : await reload();
  const defaultLevel = log.level;
  await serveUntilStopped({ initial, reload, start: (agent) => startAgent(agent, log, defaultLevel), log });
  return EXIT.ok;
}

/** Resolves once the stored desired state was applied, as AgentRunner.start() does. */
async function startAgent({ config, hybrid, warnings }: PreparedAgent, log: Logger, defaultLevel: string): Promise<Running> {
  log.level = config.logLevel ?? defaultLevel;
  const plaintext = plaintextWarning(config);
  if (plaintext !== null) log.warn({ agent: config.id }, plaintext);
  // Info, not warn: without a list the agent does what it always did; check-config warns.
  for (const warning of warnings) log.info({ agent: config.id }, warning);
  let runner: AgentRunner | null = null;
  const metrics = new AgentMetrics({ serving: () => runner?.observedReport.backends ?? [] });
  runner = new AgentRunner({
    agentId: config.id,
    labels: config.labels,
    hafleetVersion: packageVersion(),
    controllers: config.controllers,
    applier: new RuntimeApplier({
      sockets: config.sockets.map(parseSocketAddress),
      stateDir: config.stateDir,
      drainMs: config.drainPeriod,
      logger: log.child({ agent: config.id }),
      client: { observer: metrics },
      ...(hybrid ? { hybrid } : {}),
    }),
    stateDir: config.stateDir,
    manage: managedBackends(config.manage),
    resyncMs: config.resync,
    observer: metrics,
    ...(config.tls === undefined ? {} : { tls: config.tls }),
    logger: log,
  });
  const endpoint = config.metricsListen === undefined ? null : await startMetricsServer(config.metricsListen, [metrics], log);
  const started = runner;
  const stop = async (): Promise<void> => {
    await started.stop();
    await endpoint?.close();
  };
  try {
    await started.start();
  } catch (error) {
    await stop();
    throw error;
  }
  return { stop };
}
