import type { Server } from "node:http";
import { BlockList, isIP } from "node:net";

export interface RunningHttpServer {
  port: number;
  close(): Promise<void>;
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK.addAddress("::1", "ipv6");

/** A literal in 127.0.0.0/8 or ::1 (IPv4-mapped forms included), or `localhost`; no other name is resolved to find out. */
export function isLoopbackHost(host: string): boolean {
  if (host.toLowerCase() === "localhost") return true;
  const family = isIP(host);
  return family !== 0 && LOOPBACK.check(host, family === 4 ? "ipv4" : "ipv6");
}

/** Binds `server` (port 0 picks one); close() also ends kept-alive connections, so it never waits on a client. */
export async function listenHttp(server: Server, host: string, port: number): Promise<RunningHttpServer> {
  // Slow or idle clients (scrapers, pages that poll) must not pin sockets.
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    port: (server.address() as { port: number }).port,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
