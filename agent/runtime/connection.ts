import { connect, type Socket } from "node:net";
import { ConnectError, ConnectionLostError, TimeoutError } from "../errors.js";
import { assertBatchOrder } from "./batch-order.js";
import type { RuntimeCommand } from "./commands.js";
import { PromptFramer } from "./prompt-framer.js";
import { classifyReply, type CommandReply } from "./reply.js";
import { formatSocketAddress, type SocketAddress } from "./socket-address.js";

/**
 * How much is written ahead of the replies read. HAProxy 3.2.0 stops answering a prompt-mode
 * session that receives more than ~16 KB of pipelined commands at once, and then crashes the
 * whole process when that client closes (fixed by c6c2ef1f1, haproxy issue #3064): a client
 * that never has 16 KB unanswered never meets it, and one facing a server that stopped
 * answering has only a window's worth outstanding when it gives up.
 */
export interface SendWindow {
  /** Commands written but not yet answered. */
  commands: number;
  /** Their bytes; a single command larger than this still goes alone. */
  bytes: number;
}

/** Half of the 16 KB that froze 3.2.0, and enough to keep HAProxy's input buffer busy. */
export const DEFAULT_SEND_WINDOW: SendWindow = { commands: 512, bytes: 8 * 1024 };

interface Exchange {
  commands: readonly RuntimeCommand[];
  replies: CommandReply[];
  /** Commands written so far: those past `replies.length` are in flight. */
  sent: number;
  inFlightBytes: number;
  maxWriteBytes: number;
  resolve: (replies: CommandReply[]) => void;
  reject: (error: Error) => void;
}

/**
 * One interactive Runtime API session. It is used by one batch at a time (the client
 * serialises); commands are written as replies come back, within a send window, because
 * HAProxy stops reading once its output buffer is full (a client that only writes deadlocks)
 * and some versions fail on a large unanswered backlog (see SendWindow).
 */
export class Connection {
  private readonly framer = new PromptFramer();
  private exchange: Exchange | null = null;
  private closed = false;
  private waitingForDrain = false;
  private greeted: (() => void) | null = null;

  private constructor(
    private readonly socket: Socket,
    readonly name: string,
    private readonly window: SendWindow,
  ) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.onData(chunk));
    socket.on("drain", () => {
      this.waitingForDrain = false;
      this.pump();
    });
    socket.on("close", () => this.onClose());
    // 'close' follows every 'error'; the pending exchange is failed there.
    socket.on("error", () => undefined);
  }

  static async open(address: SocketAddress, timeoutMs: number, window: SendWindow = DEFAULT_SEND_WINDOW): Promise<Connection> {
    if (!(window.commands >= 1 && window.bytes >= 1)) throw new RangeError(`a send window needs room for one command, got ${JSON.stringify(window)}`);
    const name = formatSocketAddress(address);
    const socket = address.kind === "unix" ? connect({ path: address.path }) : connect({ host: address.host, port: address.port });
    const connection = new Connection(socket, name, window);
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

  /** `chunkBytes` caps one socket write; the send window caps what is unanswered. */
  async run(commands: readonly RuntimeCommand[], timeoutMs: number, chunkBytes: number): Promise<CommandReply[]> {
    assertBatchOrder(commands);
    if (this.closed) throw new ConnectionLostError(this.name, 0, commands.length);
    if (commands.length === 0) return [];
    const done = new Promise<CommandReply[]>((resolve, reject) => {
      this.exchange = { commands, replies: [], sent: 0, inFlightBytes: 0, maxWriteBytes: Math.max(1, chunkBytes), resolve, reject };
    });
    // Observed, so that a failure while still writing is not reported as unhandled.
    done.catch(() => undefined);
    const result = withTimeout(done, timeoutMs, () => {
      const answered = this.exchange?.replies.length ?? 0;
      this.socket.destroy();
      return new TimeoutError(this.name, `batch of ${commands.length} commands (${answered} answered)`, timeoutMs);
    });
    this.pump();
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

  /** Writes whatever the window has room for; called on start, on every reply, and on drain. */
  private pump(): void {
    const exchange = this.exchange;
    // Topped up once half the window is answered, not on every reply: fewer, larger writes.
    if (exchange !== null && (exchange.inFlightBytes > this.window.bytes / 2 || exchange.sent - exchange.replies.length > this.window.commands / 2)) return;
    while (exchange !== null && exchange === this.exchange && !this.closed && !this.waitingForDrain) {
      const chunk = this.nextChunk(exchange);
      if (chunk === "") return;
      if (!this.socket.write(chunk)) this.waitingForDrain = true;
    }
  }

  private nextChunk(exchange: Exchange): string {
    let chunk = "";
    while (exchange.sent < exchange.commands.length) {
      const line = `${exchange.commands[exchange.sent]!.text}\n`;
      const inFlight = exchange.sent - exchange.replies.length;
      const fits = inFlight === 0 || (inFlight < this.window.commands && exchange.inFlightBytes + line.length <= this.window.bytes);
      if (!fits || (chunk !== "" && chunk.length + line.length > exchange.maxWriteBytes)) break;
      chunk += line;
      exchange.sent += 1;
      exchange.inFlightBytes += line.length;
    }
    return chunk;
  }

  private onData(chunk: string): void {
    for (const text of this.framer.push(chunk)) {
      if (this.greeted) {
        this.greeted();
        this.greeted = null;
        continue;
      }
      const exchange = this.exchange;
      const command = exchange !== null && exchange.replies.length < exchange.sent ? exchange.commands[exchange.replies.length] : undefined;
      if (!exchange || !command) {
        // A reply nobody asked for means we have lost our place in the stream.
        this.socket.destroy();
        return;
      }
      exchange.replies.push(classifyReply(command, text));
      exchange.inFlightBytes -= command.text.length + 1;
      if (exchange.replies.length === exchange.commands.length) {
        this.exchange = null;
        exchange.resolve(exchange.replies);
      }
    }
    this.pump();
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
