import { createConnection } from "node:net";

/**
 * Sends one request to an HAProxy admin (or master) socket in non-interactive mode and returns
 * the whole reply. Deliberately shares nothing with the product's client: tests use it to read
 * HAProxy's own answer, so a bug in the client cannot hide itself.
 *
 * Non-interactive mode runs every complete line of the first write and then closes, so the end
 * of the reply is HAProxy closing the connection, never a quiet period. A timeout is a failure,
 * not a partial success.
 */
export async function sendRaw(socketPath: string, text: string, timeoutMs = 5_000): Promise<string> {
  // A line without its final newline is never executed.
  const payload = text.endsWith("\n") ? text : `${text}\n`;
  return new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let settled = false;
    const socket = createConnection({ path: socketPath });
    const settle = (error: Error | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (error) reject(error);
      else resolve(Buffer.concat(chunks).toString("utf8"));
    };
    const timer = setTimeout(() => {
      settle(
        new Error(
          `${socketPath}: no end of reply to ${JSON.stringify(firstLine(text))} within ${timeoutMs} ms ` +
            `(${received} bytes received)`,
        ),
      );
    }, timeoutMs);
    // Half-close after the request: the master socket keeps a non-interactive connection open
    // until the client shuts its write side (measured on 2.6), the admin socket closes either way.
    socket.on("connect", () => socket.end(payload));
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
    });
    socket.on("end", () => settle(null));
    socket.on("error", (error) => settle(error));
  });
}

function firstLine(text: string): string {
  const line = text.split("\n", 1)[0] ?? "";
  return line.length > 80 ? `${line.slice(0, 80)}...` : line;
}
