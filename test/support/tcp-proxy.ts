import { createServer, connect, type Server, type Socket } from "node:net";

/**
 * A loopback TCP proxy a test can break on purpose, for what crosses the network between agent
 * and controller. Its faults are faithful to TCP, so that each end sees what it would see on a
 * real network:
 * - `stall()`: a black hole. Nothing is forwarded and nothing more is read, both ways; the
 *   bytes are held (in the proxy and in the kernel's buffers), sockets stay open, and the
 *   senders' TCP windows close, so their writes back up (grpc-js's write() returns false).
 *   `resume()` forwards what was held, in order, and reads again.
 * - `delay(ms)`: latency. Every chunk is forwarded `ms` after it arrived, in order, both ways;
 *   `delay(0)` ends it (what is already delayed still comes first).
 * - `drop()`: every connection reset (RST) at once, as by a middlebox losing its state.
 */
export interface TcpProxy {
  port: number;
  stall(): void;
  resume(): void;
  delay(ms: number): void;
  drop(): void;
  close(): Promise<void>;
}

interface Faults {
  stalled: boolean;
  delayMs: number;
}

/**
 * Bytes a lane holds before it stops reading: a delay line keeps no more in flight than a TCP
 * window would, so a fast sender behind a slow path is slowed by flow control, not buffered
 * here without bound.
 */
const MAX_IN_FLIGHT_BYTES = 4 * 1024 * 1024;

/** One direction of a connection: what `from` sends, written to `to` when due. */
class Lane {
  private readonly queue: Array<{ chunk: Buffer; due: number }> = [];
  private queuedBytes = 0;
  private timer: NodeJS.Timeout | null = null;
  /** `to`'s buffer is full: wait for its 'drain', as a router would for a slow link. */
  private full = false;
  private ended = false;
  private endSent = false;

  constructor(
    private readonly from: Socket,
    private readonly to: Socket,
    private readonly faults: Faults,
  ) {
    from.on("data", (chunk: Buffer) => {
      this.queue.push({ chunk, due: Date.now() + faults.delayMs });
      this.queuedBytes += chunk.length;
      this.pump();
    });
    from.on("end", () => {
      this.ended = true;
      this.pump();
    });
    to.on("drain", () => {
      this.full = false;
      this.pump();
    });
    this.pump();
  }

  /** Forwards what is due, in arrival order, unless stalled; reads on only while there is room. */
  pump(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (!this.faults.stalled) {
      const now = Date.now();
      while (!this.full && this.queue.length > 0 && this.queue[0]!.due <= now) {
        const { chunk } = this.queue.shift()!;
        this.queuedBytes -= chunk.length;
        if (!this.to.write(chunk)) this.full = true;
      }
      if (this.queue.length > 0 && !this.full) this.timer = setTimeout(() => this.pump(), this.queue[0]!.due - now);
      if (this.queue.length === 0 && this.ended && !this.endSent) {
        this.endSent = true;
        this.to.end();
      }
    }
    if (this.faults.stalled || this.full || this.queuedBytes >= MAX_IN_FLIGHT_BYTES) this.from.pause();
    else this.from.resume();
  }

  stop(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}

export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const faults: Faults = { stalled: false, delayMs: 0 };
  const connections = new Set<{ client: Socket; upstream: Socket; lanes: Lane[] }>();
  const forget = (connection: { client: Socket; upstream: Socket; lanes: Lane[] }, reset: boolean): void => {
    connections.delete(connection);
    for (const lane of connection.lanes) lane.stop();
    for (const socket of [connection.client, connection.upstream]) {
      if (reset && !socket.destroyed) socket.resetAndDestroy();
      else socket.destroy();
    }
  };
  // Half-open allowed: a peer's FIN is forwarded after the bytes still delayed before it.
  const server: Server = createServer({ allowHalfOpen: true }, (client) => {
    const upstream = connect({ port: targetPort, host: "127.0.0.1", allowHalfOpen: true });
    const connection = { client, upstream, lanes: [] as Lane[] };
    connections.add(connection);
    connection.lanes.push(new Lane(client, upstream, faults), new Lane(upstream, client, faults));
    for (const socket of [client, upstream]) {
      // A reset (or a refused upstream) is passed on as a reset; a clean close as a close.
      socket.on("error", () => forget(connection, true));
      socket.on("close", () => forget(connection, false));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const pumpAll = (): void => {
    for (const connection of connections) for (const lane of connection.lanes) lane.pump();
  };
  return {
    port: (server.address() as { port: number }).port,
    stall: () => {
      faults.stalled = true;
      pumpAll();
    },
    resume: () => {
      faults.stalled = false;
      pumpAll();
    },
    delay: (ms) => {
      if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`delay(ms): ms must be a finite number >= 0, got ${ms}`);
      faults.delayMs = ms;
    },
    drop: () => {
      for (const connection of connections) forget(connection, true);
    },
    close: () =>
      new Promise((resolve) => {
        for (const connection of connections) forget(connection, false);
        server.close(() => resolve());
      }),
  };
}
