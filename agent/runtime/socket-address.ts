import { isIP } from "node:net";
import { InvalidInputError } from "../errors.js";

export type SocketAddress =
  | { kind: "unix"; path: string }
  | { kind: "tcp"; host: string; port: number };

const TCP_PATTERN = /^(?:\[(?<v6>[0-9A-Fa-f:.]+)\]|(?<host>[A-Za-z0-9.-]+)):(?<port>[0-9]{1,5})$/;

/**
 * `--socket` takes a unix socket path (anything with a `/`) or `host:port` / `[v6]:port`
 * for a TCP stats socket.
 */
export function parseSocketAddress(text: string): SocketAddress {
  if (text.includes("/")) return { kind: "unix", path: text };
  const match = TCP_PATTERN.exec(text);
  const port = Number(match?.groups?.port);
  const host = match?.groups?.v6 ?? match?.groups?.host;
  if (host === undefined || !(port >= 1 && port <= 65535) || (match?.groups?.v6 && isIP(host) !== 6)) {
    throw new InvalidInputError("--socket", [
      { path: "socket", message: "must be a unix socket path or HOST:PORT with a port in 1..65535", value: text },
    ]);
  }
  return { kind: "tcp", host, port };
}

export function formatSocketAddress(address: SocketAddress): string {
  if (address.kind === "unix") return address.path;
  return address.host.includes(":") ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}
