import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import { InvalidInputError, UsageError } from "../errors.js";
import { parseSocketAddress } from "../runtime/socket-address.js";
import { AgentRunner } from "../run/agent-runner.js";
import { RuntimeApplier } from "../run/applier.js";
import { LIMITS } from "../../proto/messages.js";
import { parseDuration, parseFlags } from "./args.js";
import { EXIT } from "./run-cli.js";
import { hybridFlagOptions, openHybridSession, parseHybridFlags } from "../hybrid/hybrid-session.js";

export const RUN_HELP = `Usage: hafleet-agent run --controller HOST:PORT [--controller ...] --socket SOCKET [--socket ...] --id ID [options]

Runs the agent: keeps every HAProxy given by --socket in step with the desired backend servers
the hafleet controller streams to it. The desired state is stored in the state dir and applied
at start, before any controller answers, and again periodically; losing the controller never
changes HAProxy. Runs until SIGTERM or SIGINT.

  --controller A    controller address HOST:PORT (repeat: tried in order, the next one after
                    each failure)
  --socket S        admin socket: a unix path, or HOST:PORT (repeat for several HAProxy)
  --id ID           this agent's id (1-128 letters, digits, '.', '_' or '-')
  --label K=V       a label the controller selects agents by, e.g. region=eu-west-1 (repeat)
  --state-dir DIR   where the desired state and the drain ledgers are kept
                    (default /var/lib/hafleet)
  --drain-period D  how long a removed server drains before maintenance (default 5s;
                    sooner when it has no sessions left)
  --resync D        how often to re-apply the stored desired state, repairing drift such as
                    a restarted HAProxy or a server changed by hand (default 10s)
  hybrid mode, as for apply (one --socket): --config-template T --config-out FILE
                    --state-file F --master-socket S [--spare-slots N] [--var KEY=VALUE ...]
  -h, --help        this text

Exit codes: 0 stopped by SIGTERM/SIGINT; 2 invalid input.`;

export async function runCommand(args: string[], log: Logger): Promise<number> {
  const flags = parseFlags("run", args, {
    controller: { type: "string", multiple: true },
    socket: { type: "string", multiple: true },
    id: { type: "string" },
    label: { type: "string", multiple: true },
    "state-dir": { type: "string" },
    "drain-period": { type: "string" },
    resync: { type: "string" },
    ...hybridFlagOptions,
  });
  const controllers = flags.controller ?? [];
  const sockets = (flags.socket ?? []).map(parseSocketAddress);
  if (controllers.length === 0 || sockets.length === 0 || flags.id === undefined) throw new UsageError("run needs --controller, --socket and --id");
  controllers.forEach(checkControllerAddress);
  if (sockets.length > LIMITS.sockets) throw new InvalidInputError("--socket", [{ path: "socket", message: `at most ${LIMITS.sockets} sockets` }]);
  const drainMs = parseDuration("--drain-period", flags["drain-period"] ?? "5s");
  const resyncMs = parseDuration("--resync", flags.resync ?? "10s");
  if (resyncMs <= 0) throw new InvalidInputError("--resync", [{ path: "--resync", message: "must be more than 0", value: flags.resync }]);
  const stateDir = flags["state-dir"] ?? "/var/lib/hafleet";
  const hybridSettings = parseHybridFlags(flags);
  if (hybridSettings && sockets.length > 1) throw new UsageError("hybrid mode manages one HAProxy (one config file): give one --socket");
  const hybrid = hybridSettings ? await openHybridSession(hybridSettings, flags.socket![0]!) : undefined;

  const runner = new AgentRunner({
    agentId: flags.id,
    labels: parseLabels(flags.label ?? []),
    hafleetVersion: packageVersion(),
    controllers,
    applier: new RuntimeApplier({ sockets, stateDir, drainMs, logger: log.child({ agent: flags.id }), ...(hybrid ? { hybrid } : {}) }),
    stateDir,
    resyncMs,
    logger: log,
  });
  // Listening before starting: a signal during the first apply still stops the agent cleanly.
  const signalled = nextSignal();
  try {
    await runner.start();
    const signal = await signalled.promise;
    log.info({ signal }, "stopping");
  } finally {
    signalled.dispose();
    await runner.stop();
  }
  return EXIT.ok;
}

function nextSignal(): { promise: Promise<NodeJS.Signals>; dispose: () => void } {
  let onSignal: (signal: NodeJS.Signals) => void = () => undefined;
  const promise = new Promise<NodeJS.Signals>((resolve) => {
    onSignal = resolve;
  });
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
  // A second signal while stopping then ends the process at once, as without a handler.
  return { promise, dispose: () => void process.off("SIGTERM", onSignal).off("SIGINT", onSignal) };
}

const CONTROLLER_ADDRESS = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/;

function checkControllerAddress(text: string): void {
  const port = Number(CONTROLLER_ADDRESS.exec(text)?.[1]);
  if (!(port >= 1 && port <= 65535)) {
    throw new InvalidInputError("--controller", [{ path: "controller", message: "must be HOST:PORT or [IPv6]:PORT with a port in 1..65535", value: text }]);
  }
}

function parseLabels(texts: readonly string[]): Record<string, string> {
  const labels = new Map<string, string>();
  for (const text of texts) {
    const at = text.indexOf("=");
    const key = at < 0 ? "" : text.slice(0, at);
    if (at <= 0) throw new InvalidInputError("--label", [{ path: "label", message: "must be KEY=VALUE", value: text }]);
    if (labels.has(key)) throw new InvalidInputError("--label", [{ path: "label", message: `${key} given twice`, value: text }]);
    labels.set(key, text.slice(at + 1));
  }
  return Object.fromEntries(labels);
}

/** The version in hafleet's package.json, wherever this file runs from (source or dist). */
function packageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let depth = 0; depth < 5; depth++) {
    const candidate = join(dir, "package.json");
    if (existsSync(candidate)) {
      const parsed = JSON.parse(readFileSync(candidate, "utf8")) as { name?: unknown; version?: unknown };
      if (parsed.name === "hafleet" && typeof parsed.version === "string") return parsed.version;
    }
    dir = dirname(dir);
  }
  return "unknown";
}
