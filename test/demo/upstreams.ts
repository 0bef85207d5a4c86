import { rename, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";

/*
 * The demo's upstream web servers: `node upstreams.js COUNT PORTS_FILE`. A process of their
 * own, not the driver's, so that `demo.sh --keep` can leave them running after the driver exits.
 * Each listens on a port the system picks (no race with anything else picking ports), and the
 * ports are written to PORTS_FILE, as a JSON array, once all listen. Every request, HAProxy's
 * health checks included, is answered with the server's own address, so a response tells which
 * upstream HAProxy picked.
 */

const [count, portsFile] = process.argv.slice(2);
const ports = await Promise.all(Array.from({ length: Number(count) }, listen));
await writeFile(`${portsFile}.next`, JSON.stringify(ports) + "\n");
await rename(`${portsFile}.next`, portsFile!);

function listen(): Promise<number> {
  const server: Server = createServer((_request, response) => response.end(`upstream 127.0.0.1:${port(server)}\n`));
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(port(server)));
  });
}

function port(server: Server): number {
  const address = server.address();
  return typeof address === "object" && address !== null ? address.port : 0;
}
