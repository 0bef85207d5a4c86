import { createServer, connect, type Server, type Socket } from "node:net";

/**
 * A loopback TCP proxy a test can break on purpose: `stall()` stops forwarding both ways
 * (bytes are held, sockets stay open: a black-holed peer), `drop()` resets every connection,
 * `resume()` forwards again. For what crosses the network between agent and controller.
 */
export interface TcpProxy {
  port: number;
  stall(): void;
  resume(): void;
  drop(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const pairs = new Set<[Socket, Socket]>();
  let stalled = false;
  const server: Server = createServer((client) => {
    const upstream = connect(targetPort, "127.0.0.1");
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    const forget = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const [from, to] of [pair, [upstream, client] as const]) {
      from.on("data", (chunk: Buffer) => {
        if (!stalled) to.write(chunk);
      });
      from.on("close", forget);
      from.on("error", forget);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    stall: () => {
      stalled = true;
    },
    resume: () => {
      stalled = false;
    },
    drop: () => {
      for (const [client, upstream] of pairs) {
        client.resetAndDestroy();
        upstream.resetAndDestroy();
      }
      pairs.clear();
    },
    close: () =>
      new Promise((resolve) => {
        for (const [client, upstream] of pairs) {
          client.destroy();
          upstream.destroy();
        }
        server.close(() => resolve());
      }),
  };
}
