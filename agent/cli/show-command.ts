import { join } from "node:path";
import type { Logger } from "pino";
import { parseDesiredStateJson, type DesiredServer } from "../model/desired-state.js";
import { diffServers, inStep } from "../reconcile/server-diff.js";
import { parseDesiredSet } from "../run/local-store.js";
import { UsageError } from "../errors.js";
import { readObservedState } from "../reconcile/read-observed.js";
import { RuntimeClient } from "../runtime/runtime-client.js";
import { parseSocketAddress } from "../runtime/socket-address.js";
import { parseFlags } from "./args.js";
import { terminalSafeJson } from "./terminal-safe.js";
import { formatDiff, formatObserved, managedBy, serverEndpoint } from "./format.js";
import { readInputFile } from "./read-input.js";

export const SHOW_HELP = `Usage: hafleet-agent show --socket SOCKET [--socket SOCKET ...] [--json]
       hafleet-agent show --diff --socket SOCKET [--state-dir DIR | --desired FILE] [--json]

Prints what each HAProxy really runs, per backend and server: name, address:port, weight,
admin state, operational status, and whether hafleet manages it (slot: a configured server
hafleet may fill; dynamic: a server hafleet added; no: a name hafleet will not use).

  --socket S        admin socket: a unix path, or HOST:PORT (repeat for several HAProxy)
  --diff            the desired servers against what HAProxy runs, server by server:
                    '=' serving, '!' held (drain or maintenance), '-' missing, '+' unexpected;
                    exit 0 when HAProxy runs exactly the desired servers, 1 otherwise
  --state-dir DIR   with --diff: the desired state 'hafleet-agent run' keeps there
                    (default /var/lib/hafleet)
  --desired FILE    with --diff: a desired-state JSON file instead (as for apply)
  --json            JSON instead of a table
  -h, --help        this text`;

export async function showCommand(args: string[], log: Logger): Promise<number> {
  const flags = parseFlags("show", args, { socket: { type: "string", multiple: true }, json: { type: "boolean" }, diff: { type: "boolean" }, "state-dir": { type: "string" }, desired: { type: "string" } });
  const sockets = (flags.socket ?? []).map(parseSocketAddress);
  if (sockets.length === 0) throw new UsageError("show needs --socket");
  if (!flags.diff && (flags["state-dir"] !== undefined || flags.desired !== undefined)) throw new UsageError("--state-dir and --desired go with --diff");
  if (flags["state-dir"] !== undefined && flags.desired !== undefined) throw new UsageError("give --state-dir or --desired, not both");
  const desired = flags.diff ? await desiredBackends(flags.desired, flags["state-dir"] ?? "/var/lib/hafleet") : null;
  const views = await Promise.all(
    sockets.map(async (address) => {
      const client = new RuntimeClient(address, { logger: log });
      try {
        return { socket: client.name, observed: await readObservedState(client, "full") };
      } finally {
        client.close();
      }
    }),
  );
  if (desired !== null) {
    const diffs = views.map(({ socket, observed }) => ({ socket, backends: diffServers(desired, observed) }));
    if (flags.json) process.stdout.write(terminalSafeJson(JSON.stringify({ sockets: diffs }, null, 2)) + "\n");
    else process.stdout.write(diffs.map(({ socket, backends }) => formatDiff(socket, backends)).join("\n\n") + "\n");
    return diffs.every((diff) => inStep(diff.backends)) ? 0 : 1;
  }
  if (flags.json) {
    const sockets = views.map(({ socket, observed }) => ({
      socket,
      backends: [...observed.values()].map((backend) => ({
        name: backend.rawName,
        algorithm: backend.algorithm,
        servers: backend.servers.map((server) => ({
          name: server.rawName,
          endpoint: serverEndpoint(server),
          weight: server.userWeight,
          admin: server.admin,
          status: server.status,
          sessions: server.sessions,
          managed: managedBy(server),
        })),
      })),
    }));
    process.stdout.write(terminalSafeJson(JSON.stringify({ sockets }, null, 2)) + "\n");
  } else {
    process.stdout.write(views.map(({ socket, observed }) => formatObserved(socket, observed)).join("\n\n") + "\n");
  }
  return 0;
}

/** From a desired-state file, or the state `run` keeps; an empty state dir is an error, not an empty diff. */
async function desiredBackends(file: string | undefined, stateDir: string): Promise<Array<{ name: string; servers: readonly DesiredServer[] }>> {
  if (file !== undefined) return parseDesiredStateJson(await readInputFile(file, "desired state"), file).backends;
  const path = join(stateDir, "desired.json");
  const set = parseDesiredSet(await readInputFile(path, "desired state 'hafleet-agent run' keeps (give --state-dir or --desired)"), path);
  return [...set.backends.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
