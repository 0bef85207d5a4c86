import { connect, type Socket } from "node:net";
import { ConnectError, ConnectionLostError, TimeoutError } from "../errors.js";
import type { RuntimeCommand } from "./commands.js";
import { PromptFramer } from "./prompt-framer.js";
import { classifyReply, type CommandReply } from "./reply.js";
import { formatSocketAddress, type SocketAddress } from "./socket-address.js";

interface Exchange {
  commands: readonly RuntimeCommand[];
  replies: CommandReply[];
  resolve: (replies: CommandReply[]) => void;
  reject: (error: Error) => void;
}

/**
 * One interactive Runtime API session. It is used by one batch at a time (the client
 * serialises); replies are read while the batch is still being written, because HAProxy
 * stops reading once its output buffer is full and a client that only writes deadlocks.
 */
export class Connection {
  private readonly framer = new PromptFramer();
  private exchange: Exchange | null = null;
  private closed = false;
  private greeted: (() => void) | null = null;

  private constructor(
    private readonly socket: Socket,
    readonly name: string,
  ) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.onData(chunk));
    socket.on("close", () => this.onClose());
    // 'close' follows every 'error'; the pending exchange is failed there.
    socket.on("error", () => undefined);
  }

  static async open(address: SocketAddress, timeoutMs: number): Promise<Connection> {
    const name = formatSocketAddress(address);
    const socket = address.kind === "unix" ? connect({ path: address.path }) : connect({ host: address.host, port: address.port });
    const connection = new Connection(socket, name);
    try {
      await withTimeout(connection.handshake(), timeoutMs, () => new TimeoutError(name, "connect", timeoutMs));
      return connection;
    } catch (error) {
      socket.destroy();
      if (error instanceof TimeoutError) throw error;
      throw new ConnectError(name, (error as Error).message);
    }
  }

  get alive(): boolean {
    return !this.closed;
  }

  async run(commands: readonly RuntimeCommand[], timeoutMs: number, chunkBytes: number): Promise<CommandReply[]> {
    if (this.closed) throw new ConnectionLostError(this.name, 0, commands.length);
    const done = new Promise<CommandReply[]>((resolve, reject) => {
      this.exchange = { commands, replies: [], resolve, reject };
    });
    // Observed, so that a failure while still writing is not reported as unhandled.
    done.catch(() => undefined);
    const result = withTimeout(done, timeoutMs, () => {
      const answered = this.exchange?.replies.length ?? 0;
      this.socket.destroy();
      return new TimeoutError(this.name, `batch of ${commands.length} commands (${answered} answered)`, timeoutMs);
    });
    await this.write(commands, chunkBytes, done);
    return result;
  }

  close(): void {
    this.socket.destroy();
  }

  private async handshake(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.socket.once("connect", resolve);
      this.socket.once("error", reject);
    });
    const greeted = new Promise<void>((resolve, reject) => {
      this.greeted = resolve;
      this.socket.once("close", () => reject(new Error("closed before the prompt")));
    });
    this.socket.write("prompt\n");
    await greeted;
  }

  private async write(commands: readonly RuntimeCommand[], chunkBytes: number, done: Promise<unknown>): Promise<void> {
    let chunk = "";
    for (const command of commands) {
      chunk += command.text + "\n";
      if (chunk.length >= chunkBytes) {
        if (!(await this.writeChunk(chunk, done))) return;
        chunk = "";
      }
    }
    if (chunk !== "") await this.writeChunk(chunk, done);
  }

  /** Resolves false when the exchange ended (closed, timed out) before the chunk could go. */
  private async writeChunk(chunk: string, done: Promise<unknown>): Promise<boolean> {
    if (this.closed) return false;
    if (this.socket.write(chunk)) return true;
    const drained = new Promise<boolean>((resolve) => this.socket.once("drain", () => resolve(true)));
    return Promise.race([drained, done.then(() => false, () => false)]);
  }

  private onData(chunk: string): void {
    for (const text of this.framer.push(chunk)) {
      if (this.greeted) {
        this.greeted();
        this.greeted = null;
        continue;
      }
      const exchange = this.exchange;
      const command = exchange?.commands[exchange.replies.length];
      if (!exchange || !command) {
        // A reply nobody asked for means we have lost our place in the stream.
        this.socket.destroy();
        return;
      }
      exchange.replies.push(classifyReply(command, text));
      if (exchange.replies.length === exchange.commands.length) {
        this.exchange = null;
        exchange.resolve(exchange.replies);
      }
    }
  }

  private onClose(): void {
    this.closed = true;
    const exchange = this.exchange;
    this.exchange = null;
    exchange?.reject(new ConnectionLostError(this.name, exchange.replies.length, exchange.commands.length));
  }
}

async function withTimeout<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
