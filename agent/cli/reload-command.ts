import { spawn } from "node:child_process";
import type { Logger } from "pino";
import { UsageError } from "../errors.js";
import { MasterCli } from "../hybrid/master-cli.js";
import { ReloadFailedError, Reloader, ReloadTimeoutError } from "../hybrid/reloader.js";
import { saveServerState, StateFileWriteError, type SavedServerState } from "../hybrid/state-file.js";
import { RuntimeClient } from "../runtime/runtime-client.js";
import { parseSocketAddress } from "../runtime/socket-address.js";
import { parseDuration, parseFlags } from "./args.js";
import { EXIT } from "./run-cli.js";
import { terminalSafe, terminalSafeLines } from "./terminal-safe.js";

export const RELOAD_HELP = `Usage: hafleet-agent reload --master-socket M --socket S --state-file F [options]

Saves what HAProxy runs to its server-state file (as 'save-state' does), then reloads HAProxy
hitlessly through its master CLI, and checks the outcome: a new worker must take over. When
the state cannot be read, nothing is reloaded.

HAProxy 2.6 carries over from the state file, for servers its config still has: ports,
weights, ready/drain/maint, check state. Addresses set at runtime come back only on servers
whose config line uses a hostname and 'init-addr last,...'; others revert to the config's
address, and servers added at runtime are gone. Reload only when the config file holds what runs.

  --master-socket M  master CLI socket (haproxy -W -S M): a unix path, or HOST:PORT
  --socket S         admin socket of the running worker, to read the server state from
  --state-file F     the file named by 'server-state-file' in HAProxy's global section
  --timeout D        how long the new worker may take to show up (default 10s)
  --config FILE      HAProxy's configuration: when a reload fails, 'haproxy -c -f FILE' is
                     run to show why (2.6's master CLI reports the failure, not its reason)
  --haproxy-bin P    the haproxy binary for that check (default: haproxy)
  -h, --help         this text

Exit codes: 0 reloaded (prints the new worker's pid); 1 the reload failed and the previous
worker still serves (prints what HAProxy says), or the state file could not be written;
2 invalid input; 3 HAProxy unreachable, or its state unreadable (nothing reloaded).`;

export async function reloadCommand(args: string[], log: Logger): Promise<number> {
  const flags = parseFlags("reload", args, {
    "master-socket": { type: "string" },
    socket: { type: "string" },
    "state-file": { type: "string" },
    timeout: { type: "string" },
    config: { type: "string" },
    "haproxy-bin": { type: "string" },
  });
  const stateFile = flags["state-file"];
  if (flags["master-socket"] === undefined || flags.socket === undefined || stateFile === undefined) {
    throw new UsageError("reload needs --master-socket, --socket and --state-file");
  }
  const master = new MasterCli(parseSocketAddress(flags["master-socket"]), { logger: log });
  const client = new RuntimeClient(parseSocketAddress(flags.socket), { logger: log });
  const timeoutMs = parseDuration("--timeout", flags.timeout ?? "10s");
  let saved: SavedServerState | null = null;
  const reloader = new Reloader(master, {
    timeoutMs,
    logger: log,
    prepare: async () => {
      saved = await saveServerState(client, stateFile, { logger: log });
      // An open admin connection would keep the old worker alive, as an old worker, until it closes.
      client.close();
    },
  });
  try {
    const result = await reloader.reload();
    const state = saved as SavedServerState | null;
    // The master's word is not the admin socket's: say done only once the new worker answers it.
    const serving = await client.awaitWorker(result.workerPid, timeoutMs);
    if (serving?.pid !== result.workerPid) {
      process.stderr.write(`hafleet-agent reload: the master runs worker ${result.workerPid}, but ${flags.socket} is answered by ${serving === null ? "nothing" : `pid ${serving.pid}`} after ${timeoutMs} ms\n`);
      return EXIT.notConverged;
    }
    process.stdout.write(
      `${master.name}: reloaded, worker ${result.workerPid} serves (was ${result.previousWorkerPids.join(", ") || "none"}); ` +
        `new worker seen ${result.elapsedMs} ms after 'reload', master ${result.masterPid} at ${result.reloads} reload(s)\n` +
        (state ? `${state.path}: ${state.servers} server(s) saved before the reload\n` : ""),
    );
    return EXIT.ok;
  } catch (error) {
    if (error instanceof ReloadFailedError) {
      // 2.7+ gives its reason in the reply (in the message already); 2.6 says nothing, so ask `haproxy -c`.
      const why = error.reason !== null ? "" : flags.config === undefined ? `\n${NO_REASON}` : `\n${await explain(flags["haproxy-bin"] ?? "haproxy", flags.config)}`;
      process.stderr.write(`${terminalSafeLines(`hafleet-agent reload: ${error.message}${why}`)}\n`);
      return EXIT.notConverged;
    }
    if (error instanceof ReloadTimeoutError) {
      process.stderr.write(`${terminalSafeLines(`hafleet-agent reload: ${error.message}`)}\n`);
      return error.last === null ? EXIT.unreachable : EXIT.notConverged;
    }
    if (error instanceof StateFileWriteError) {
      process.stderr.write(`${terminalSafe(`hafleet-agent reload: ${error.message}`)}; nothing was reloaded\n`);
      return EXIT.notConverged;
    }
    throw error;
  } finally {
    client.close();
  }
}

const NO_REASON =
  "HAProxy 2.6's master CLI does not say why; HAProxy's log does (the master's stderr or journal), " +
  "or run again with --config FILE to have 'haproxy -c' check the configuration.";

const CHECK_TIMEOUT_MS = 10_000;
const CHECK_LINES = 20;

/** HAProxy's own words on the configuration: its `[ALERT]` lines, else whatever it printed. */
async function explain(bin: string, config: string): Promise<string> {
  const check = await runCheck(bin, config);
  if (check.error !== null) return `could not run '${bin} -c -f ${config}': ${check.error}`;
  if (check.code === 0) return `'${bin} -c -f ${config}' finds the configuration valid: the reload failed for another reason, which HAProxy's log tells.`;
  const lines = check.output.split("\n").filter((line) => line.trim() !== "");
  const alerts = lines.filter((line) => line.includes("[ALERT]"));
  const shown = (alerts.length > 0 ? alerts : lines).slice(0, CHECK_LINES);
  return [`'${bin} -c -f ${config}' says:`, ...shown.map((line) => `  ${line}`)].join("\n");
}

interface CheckResult {
  code: number | null;
  output: string;
  error: string | null;
}

function runCheck(bin: string, config: string): Promise<CheckResult> {
  return new Promise((resolve) => {
    const child = spawn(bin, ["-c", "-f", config], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    const append = (chunk: Buffer): void => {
      output += chunk.toString("utf8");
    };
    child.stdout.on("data", append);
    child.stderr.on("data", append);
    const timer = setTimeout(() => child.kill("SIGKILL"), CHECK_TIMEOUT_MS);
    child.once("error", (error) => {
      clearTimeout(timer);
      resolve({ code: null, output, error: error.message });
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, output, error: signal === null ? null : `stopped by ${signal} after ${CHECK_TIMEOUT_MS} ms` });
    });
  });
}
