import { connect, type Socket } from "node:net";
import { createServer, type Server, type TlsOptions } from "node:tls";

/**
 * The emulator behind TLS, as Consul's https port (8501) is: every TLS connection on
 * 127.0.0.1 is piped to the emulator's plain port. `options` carry the server certificate and,
 * for a `verify_incoming` Consul, the CA that client certificates must chain to.
 */
export interface TlsFront {
  address: string;
  close(): Promise<void>;
}

export async function startTlsFront(plainUrl: string, options: TlsOptions): Promise<TlsFront> {
  const plainPort = Number(new URL(plainUrl).port);
  const sockets = new Set<Socket>();
  const server: Server = createServer(options, (secure) => {
    const plain = connect(plainPort, "127.0.0.1");
    for (const socket of [secure, plain]) {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => undefined);
    }
    secure.pipe(plain).pipe(secure);
  });
  // A client refused in the handshake is the test's point, not an error of the front.
  server.on("tlsClientError", () => undefined);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    address: `https://127.0.0.1:${(server.address() as { port: number }).port}`,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
