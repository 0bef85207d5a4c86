import type { Logger } from "pino";
import { UsageError } from "../errors.js";
import { saveServerState, StateFileWriteError } from "../hybrid/state-file.js";
import { RuntimeClient } from "../runtime/runtime-client.js";
import { parseSocketAddress } from "../runtime/socket-address.js";
import { parseFlags } from "./args.js";
import { EXIT } from "./run-cli.js";
import { terminalSafe } from "./terminal-safe.js";

export const SAVE_STATE_HELP = `Usage: hafleet-agent save-state --socket SOCKET --state-file FILE

Writes what HAProxy runs now ('show servers state') to its server-state file, atomically,
for HAProxy to load on its next reload or restart. HAProxy never writes this file itself:
run this before reloading by hand (or use 'hafleet-agent reload', which does both). HAProxy
loads it with 'server-state-file FILE' in global and 'load-server-state-from-file global' in
defaults or in each backend. A reply that cannot be read leaves FILE as it was.

  --socket S        admin socket: a unix path, or HOST:PORT
  --state-file F    the server-state file to write
  -h, --help        this text

Exit codes: 0 written; 1 FILE could not be written (the old one stays); 2 invalid input;
3 HAProxy unreachable or its reply unreadable (FILE untouched).`;

export async function saveStateCommand(args: string[], log: Logger): Promise<number> {
  const flags = parseFlags("save-state", args, { socket: { type: "string" }, "state-file": { type: "string" } });
  if (flags.socket === undefined || flags["state-file"] === undefined) throw new UsageError("save-state needs --socket and --state-file");
  const client = new RuntimeClient(parseSocketAddress(flags.socket), { logger: log });
  try {
    const saved = await saveServerState(client, flags["state-file"], { logger: log });
    process.stdout.write(`${client.name}: wrote ${saved.servers} server(s) to ${saved.path}\n`);
    return EXIT.ok;
  } catch (error) {
    if (!(error instanceof StateFileWriteError)) throw error;
    process.stderr.write(`${terminalSafe(`hafleet-agent save-state: ${error.message}`)}\n`);
    return EXIT.notConverged;
  } finally {
    client.close();
  }
}
