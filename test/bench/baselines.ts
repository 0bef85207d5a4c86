import { once } from "node:events";
import { createConnection, type Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { sendRaw } from "../support/raw-socket.js";

/**
 * The two reference points the product's apply is measured between: the classic shell-script
 * way (slow floor) and the fastest a single connection allows (ceiling). Both send the given
 * commands verbatim and do not check replies; the benchmark checks the end state instead.
 */

const PER_COMMAND_TIMEOUT_MS = 5_000;
const PIPELINE_TIMEOUT_MS = 120_000;
/** Big enough to amortise syscalls, small enough that replies flow back while we still write. */
const CHUNK_BYTES = 64 * 1024;
/** In prompt mode every reply, including the one to `prompt` itself, ends with this. */
const PROMPT = "\n> ";

/** The original shell script's way: a new connection per command, sequential; resolves when all are answered. Returns elapsed ms. */
export async function sendConnectionPerCommand(socketPath: string, commands: readonly string[]): Promise<number> {
  const started = performance.now();
  for (const command of commands) {
    await sendRaw(socketPath, command, PER_COMMAND_TIMEOUT_MS);
  }
  return performance.now() - started;
}

/** The physical limit: one connection, interactive mode (`prompt\n` first), all commands written in large chunks while replies are read concurrently, done when as many prompts as commands came back. Returns elapsed ms. */
export async function sendRawPipelined(socketPath: string, commands: readonly string[]): Promise<number> {
  const started = performance.now();
  await new Promise<void>((resolve, reject) => {
    const expected = commands.length + 1; // +1: the answer to `prompt`
    const counter = promptCounter();
    let settled = false;
    const socket = createConnection({ path: socketPath });
    const settle = (error: Error | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (error) reject(error);
      else resolve();
    };
    const timer = setTimeout(
      () => settle(new Error(`pipelined: ${counter.seen() - 1} of ${commands.length} replies in ${PIPELINE_TIMEOUT_MS} ms`)),
      PIPELINE_TIMEOUT_MS,
    );
    socket.on("data", (chunk: Buffer) => {
      if (counter.feed(chunk) >= expected) settle(null);
    });
    socket.on("error", (error) => settle(error));
    socket.on("end", () => settle(new Error(`pipelined: closed after ${counter.seen() - 1} of ${commands.length} replies`)));
    socket.on("connect", () => {
      writeChunks(socket, commandChunks(commands)).catch((error: Error) => settle(error));
    });
  });
  return performance.now() - started;
}

/** Counts prompts across chunk boundaries (a prompt may arrive split over two reads). */
function promptCounter(): { feed(chunk: Buffer): number; seen(): number } {
  let seen = 0;
  let tail = "";
  return {
    feed(chunk: Buffer): number {
      // latin1 maps bytes 1:1, so a multi-byte character split across reads cannot break a match.
      const text = tail + chunk.toString("latin1");
      for (let at = text.indexOf(PROMPT); at >= 0; at = text.indexOf(PROMPT, at + PROMPT.length)) seen += 1;
      // Shorter than the prompt, so a prompt already counted can never be counted again.
      tail = text.slice(-(PROMPT.length - 1));
      return seen;
    },
    seen: () => seen,
  };
}

function* commandChunks(commands: readonly string[]): Generator<string> {
  let chunk = "prompt\n";
  for (const command of commands) {
    chunk += `${command}\n`;
    if (chunk.length >= CHUNK_BYTES) {
      yield chunk;
      chunk = "";
    }
  }
  if (chunk !== "") yield chunk;
}

/** Respects backpressure: a client that writes everything before reading deadlocks HAProxy. */
async function writeChunks(socket: Socket, chunks: Iterable<string>): Promise<void> {
  for (const chunk of chunks) {
    if (socket.destroyed) return;
    if (!socket.write(chunk)) await once(socket, "drain");
  }
}
