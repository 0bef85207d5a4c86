import type { Logger } from "pino";
import { ConnectionLostError, HafleetError, StoppingWorkerError } from "../errors.js";
import { RuntimeCommand } from "./commands.js";
import { Connection } from "./connection.js";
import type { CommandReply } from "./reply.js";
import type { RuntimeObserver } from "./runtime-observer.js";
import { formatSocketAddress, type SocketAddress } from "./socket-address.js";
import { parseWorker, type WorkerIdentity } from "./worker.js";

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

/** How long connecting keeps trying while only a stopping worker answers (a reload's handover). */
const STOPPING_RETRY_MS = 25;

/**
 * One long-lived connection to one HAProxy admin socket. Calls are serialised (one batch
 * on the wire at a time); a connection that HAProxy closed (restart, `stats timeout`) is
 * replaced on the next call.
 *
 * A connection stays with the process that accepted it, and a reload or restart puts a new
 * process behind the same path: every connection learns its worker's pid when it opens, and
 * `probe()` asks on a fresh connection who serves now. A kept connection to any other process
 * is dropped, so nothing is read from or sent to an old worker, and no old worker lives on
 * because of us.
 */
export class RuntimeClient {
  readonly name: string;
  private connection: Connection | null = null;
  /** The process the kept connection talks to. */
  private connectionWorker: WorkerIdentity | null = null;
  /** The serving process at the last fresh look; null: unreachable then; undefined: never looked. */
  private seen: WorkerIdentity | null | undefined = undefined;
  private busy = false;
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
    this.connectionWorker = null;
  }

  /** The serving process as last seen on a fresh connection (null: unreachable; undefined: not yet). */
  get worker(): WorkerIdentity | null | undefined {
    return this.seen;
  }

  /**
   * Asks a fresh connection which process serves now, and drops the kept connection if it
   * talks to another one (at once when idle, else when its batch ends). Never throws: an
   * HAProxy that cannot be reached is null.
   */
  async probe(): Promise<WorkerIdentity | null> {
    let fresh: WorkerIdentity | null;
    try {
      fresh = await this.askWorker();
    } catch (error) {
      if (!(error instanceof HafleetError)) throw error;
      this.options.logger?.debug({ socket: this.name, err: error.message }, "HAProxy probe failed");
      fresh = null;
    }
    this.seen = fresh;
    if (fresh !== null && this.connectionWorker !== null && (fresh.stopping || this.connectionWorker.pid !== fresh.pid) && !this.busy) this.close();
    return fresh;
  }

  /**
   * Probes until `pid` serves (a reload's new worker: the master lists it when it forks it, the
   * old one may still accept for a moment); the serving process at the deadline otherwise.
   */
  async awaitWorker(pid: number, timeoutMs: number): Promise<WorkerIdentity | null> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const worker = await this.probe();
      if ((worker?.pid === pid && !worker.stopping) || performance.now() > deadline) return worker;
      await new Promise((resolve) => setTimeout(resolve, STOPPING_RETRY_MS));
    }
  }

  private async askWorker(): Promise<WorkerIdentity> {
    const connection = await Connection.open(this.address, this.connectTimeoutMs);
    try {
      return await identify(connection, this.connectTimeoutMs, this.chunkBytes);
    } finally {
      connection.close();
    }
  }

  private async runNow(commands: readonly RuntimeCommand[]): Promise<CommandReply[]> {
    if (commands.length === 0) return [];
    this.busy = true;
    try {
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
    } finally {
      this.busy = false;
      // A probe during the batch saw another process serve: the next batch must not go here.
      if (this.seen && this.connectionWorker && this.seen.pid !== this.connectionWorker.pid) this.close();
    }
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

  /**
   * A new connection, to the serving process only: right after a reload the old worker may
   * still accept for a moment (it answers `Stopping: 1`); connecting again reaches the new one.
   */
  private async connect(): Promise<Connection> {
    if (this.connection?.alive) return this.connection;
    this.connection = null;
    const deadline = performance.now() + this.connectTimeoutMs;
    for (;;) {
      const connection = await Connection.open(this.address, this.connectTimeoutMs);
      let worker: WorkerIdentity;
      try {
        worker = await identify(connection, this.connectTimeoutMs, this.chunkBytes);
      } catch (error) {
        connection.close();
        throw error;
      }
      if (!worker.stopping) {
        this.connection = connection;
        this.connectionWorker = worker;
        this.seen = worker;
        this.options.logger?.debug({ socket: this.name, worker: worker.pid }, "connected to HAProxy");
        return connection;
      }
      connection.close();
      if (performance.now() > deadline) throw new StoppingWorkerError(this.name, worker.pid);
      await new Promise((resolve) => setTimeout(resolve, STOPPING_RETRY_MS));
    }
  }
}

async function identify(connection: Connection, timeoutMs: number, chunkBytes: number): Promise<WorkerIdentity> {
  const [reply] = await connection.run([RuntimeCommand.showInfo()], timeoutMs, chunkBytes);
  return parseWorker(reply!.text);
}
