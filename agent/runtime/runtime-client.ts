import type { Logger } from "pino";
import { ConnectionLostError } from "../errors.js";
import type { RuntimeCommand } from "./commands.js";
import { Connection } from "./connection.js";
import type { CommandReply } from "./reply.js";
import type { RuntimeObserver } from "./runtime-observer.js";
import { formatSocketAddress, type SocketAddress } from "./socket-address.js";

/** The narrow view the reconciler needs: run a batch, get classified replies. */
export type CommandRunner = Pick<RuntimeClient, "run">;

export interface RuntimeClientOptions {
  connectTimeoutMs?: number;
  /** For a whole batch, however long; a 10,000-command batch takes well under a second. */
  batchTimeoutMs?: number;
  /** Bytes written per socket write; HAProxy reads its input in 16 KiB buffers anyway. */
  chunkBytes?: number;
  logger?: Logger;
  observer?: RuntimeObserver;
}

/**
 * One long-lived connection to one HAProxy admin socket. Calls are serialised (one batch
 * on the wire at a time); a connection that HAProxy closed (restart, `stats timeout`) is
 * replaced on the next call.
 */
export class RuntimeClient {
  readonly name: string;
  private connection: Connection | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly connectTimeoutMs: number;
  private readonly batchTimeoutMs: number;
  private readonly chunkBytes: number;

  constructor(
    readonly address: SocketAddress,
    private readonly options: RuntimeClientOptions = {},
  ) {
    this.name = formatSocketAddress(address);
    this.connectTimeoutMs = options.connectTimeoutMs ?? 2_000;
    this.batchTimeoutMs = options.batchTimeoutMs ?? 30_000;
    this.chunkBytes = options.chunkBytes ?? 64 * 1024;
  }

  /** Runs a batch; every reply is classified, and failures are returned, not thrown. */
  run(commands: readonly RuntimeCommand[]): Promise<CommandReply[]> {
    const result = this.queue.then(() => this.runNow(commands));
    this.queue = result.catch(() => undefined);
    return result;
  }

  close(): void {
    this.connection?.close();
    this.connection = null;
  }

  private async runNow(commands: readonly RuntimeCommand[]): Promise<CommandReply[]> {
    if (commands.length === 0) return [];
    const reused = this.connection?.alive === true;
    const connection = await this.connect();
    const startedAt = performance.now();
    let replies: CommandReply[];
    try {
      replies = await this.exchange(connection, commands, reused);
    } catch (error) {
      this.observe(commands, null, startedAt);
      throw error;
    }
    // Outside the try: an observer's exception must not turn a batch that ran into a failed one.
    this.observe(commands, replies, startedAt);
    return replies;
  }

  private async exchange(connection: Connection, commands: readonly RuntimeCommand[], reused: boolean): Promise<CommandReply[]> {
    try {
      return await connection.run(commands, this.batchTimeoutMs, this.chunkBytes);
    } catch (error) {
      // A kept-alive connection may have died unseen (HAProxy restarted). Reads are safe to
      // send again; changes are not, since some may have run: the caller re-reads instead.
      const staleBeforeAnyReply = error instanceof ConnectionLostError && error.answered === 0;
      if (reused && staleBeforeAnyReply && commands.every((command) => command.isRead)) {
        this.options.logger?.debug({ socket: this.name }, "connection was stale, retrying reads");
        return (await this.connect()).run(commands, this.batchTimeoutMs, this.chunkBytes);
      }
      throw error;
    }
  }

  /** The retried reads of a stale connection count once, by their final outcome: the stale try is routine. */
  private observe(commands: readonly RuntimeCommand[], replies: readonly CommandReply[] | null, startedAt: number): void {
    const observer = this.options.observer;
    if (observer === undefined) return;
    observer.batch((performance.now() - startedAt) / 1000, replies !== null);
    commands.forEach((command, index) => observer.commandSent(command.verb, replies?.[index]?.ok ?? false));
  }

  private async connect(): Promise<Connection> {
    if (this.connection?.alive) return this.connection;
    this.connection = await Connection.open(this.address, this.connectTimeoutMs);
    this.options.logger?.debug({ socket: this.name }, "connected to HAProxy");
    return this.connection;
  }
}
