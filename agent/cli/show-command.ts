import type { Logger } from "pino";
import { UsageError } from "../errors.js";
import { readObservedState } from "../reconcile/read-observed.js";
import { RuntimeClient } from "../runtime/runtime-client.js";
import { parseSocketAddress } from "../runtime/socket-address.js";
import { parseFlags } from "./args.js";
import { terminalSafeJson } from "./terminal-safe.js";
import { formatObserved, managedBy, serverEndpoint } from "./format.js";

export const SHOW_HELP = `Usage: hafleet-agent show --socket SOCKET [--socket SOCKET ...] [--json]

Prints what each HAProxy really runs, per backend and server: name, address:port, weight,
admin state, operational status, and whether hafleet manages it (slot: a configured server
hafleet may fill; dynamic: a server hafleet added; no: a name hafleet will not use).

  --socket S   admin socket: a unix path, or HOST:PORT (repeat for several HAProxy)
  --json       JSON instead of a table
  -h, --help   this text`;

export async function showCommand(args: string[], log: Logger): Promise<number> {
  const flags = parseFlags("show", args, { socket: { type: "string", multiple: true }, json: { type: "boolean" } });
  const sockets = (flags.socket ?? []).map(parseSocketAddress);
  if (sockets.length === 0) throw new UsageError("show needs --socket");
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
