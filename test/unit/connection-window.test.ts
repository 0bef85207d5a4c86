import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { TimeoutError } from "../../agent/errors.js";
import { addressSchema, nameSchema, portSchema } from "../../agent/model/values.js";
import { RuntimeCommand } from "../../agent/runtime/commands.js";
import { Connection, DEFAULT_SEND_WINDOW, type SendWindow } from "../../agent/runtime/connection.js";

/*
 * The send window against a stand-in HAProxy on a unix socket that answers at its own pace, and
 * measures, each time bytes arrive, how much the client has written that it has not answered:
 * the quantity that froze 3.2.0 past ~16 KB (haproxy #3064).
 */

interface SlowServer {
  path: string;
  /** The most commands, and bytes, ever received and not yet answered. */
  maxUnanswered: { commands: number; bytes: number };
  received: () => number;
  answered: () => number;
  /** Stop answering (a frozen HAProxy); connections stay open. */
  freeze: () => void;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Answers `perTick` commands every `tickMs`, each with an empty reply and the prompt, as `set server ... state` does. */
async function slowServer(perTick: number, tickMs: number): Promise<SlowServer> {
  const dir = await mkdtemp(join(tmpdir(), "hafleet-window-"));
  const path = join(dir, "admin.sock");
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let received = 0;
  let answered = 0;
  let frozen = false;
  const maxUnanswered = { commands: 0, bytes: 0 };
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    socket.setEncoding("utf8");
    let buffer = "";
    let greeted = false;
    const pending: string[] = [];
    let pendingBytes = 0;
    socket.on("data", (chunk: string) => {
      buffer += chunk;
      let newline: number;
      while ((newline = buffer.indexOf("\n")) !== -1) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (!greeted && line === "prompt") {
          greeted = true;
          socket.write("\n> ");
          continue;
        }
        pending.push(line);
        pendingBytes += line.length + 1;
        received += 1;
      }
      maxUnanswered.commands = Math.max(maxUnanswered.commands, pending.length);
      maxUnanswered.bytes = Math.max(maxUnanswered.bytes, pendingBytes + buffer.length);
    });
    const timer = setInterval(() => {
      if (frozen) return;
      let out = "";
      for (let i = 0; i < perTick && pending.length > 0; i++) {
        pendingBytes -= pending.shift()!.length + 1;
        answered += 1;
        out += "\n> ";
      }
      if (out !== "") socket.write(out);
    }, tickMs);
    timers.add(timer);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  cleanups.push(async () => {
    for (const timer of timers) clearInterval(timer);
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });
  return { path, maxUnanswered, received: () => received, answered: () => answered, freeze: () => (frozen = true) };
}

const be = nameSchema.parse("be_0123456789");
function batch(size: number): RuntimeCommand[] {
  return Array.from({ length: size }, (_, index) => RuntimeCommand.setState(be, nameSchema.parse(`srv${index}`), "ready"));
}

async function open(path: string, window?: SendWindow): Promise<Connection> {
  const connection = await Connection.open({ kind: "unix", path }, 1_000, window);
  cleanups.push(async () => connection.close());
  return connection;
}

describe("Connection: the send window", () => {
  it("never has more than 8 KB unanswered, against a server that answers slowly, and gets every reply", async () => {
    const server = await slowServer(20, 1);
    const connection = await open(server.path);
    const commands = batch(2_000);
    const replies = await connection.run(commands, 20_000, 64 * 1024);
    expect(replies).toHaveLength(2_000);
    expect(replies.every((reply, index) => reply.ok && reply.command === commands[index])).toBe(true);
    expect(server.maxUnanswered.bytes).toBeLessThanOrEqual(DEFAULT_SEND_WINDOW.bytes);
    // Half the window at least was used: a window that holds only because it never opens would be slow.
    expect(server.maxUnanswered.bytes).toBeGreaterThan(DEFAULT_SEND_WINDOW.bytes / 2);
  });

  it("bounds the count of commands in flight as well as their bytes", async () => {
    const server = await slowServer(3, 1);
    const connection = await open(server.path, { commands: 10, bytes: 64 * 1024 });
    expect(await connection.run(batch(300), 20_000, 64 * 1024)).toHaveLength(300);
    expect(server.maxUnanswered.commands).toBe(10);
  });

  it("sends a server that stopped answering no more than one window, then times out", async () => {
    const server = await slowServer(50, 1);
    const connection = await open(server.path);
    const pending = connection.run(batch(10_000), 500, 64 * 1024);
    while (server.answered() < 200) await new Promise((resolve) => setTimeout(resolve, 1));
    server.freeze();
    const error = await pending.catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(TimeoutError);
    const commandBytes = batch(1)[0]!.text.length + 1;
    expect(server.received() - server.answered()).toBeLessThanOrEqual(Math.floor(DEFAULT_SEND_WINDOW.bytes / commandBytes));
    expect(server.received()).toBeLessThan(10_000 / 10);
    // The connection is given up (destroyed), not kept with a backlog nobody will answer.
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(connection.alive).toBe(false);
  });

  it("still sends a command larger than the window, alone", async () => {
    const server = await slowServer(5, 1);
    const connection = await open(server.path, { commands: 4, bytes: 8 });
    expect(await connection.run(batch(20), 5_000, 64 * 1024)).toHaveLength(20);
    expect(server.maxUnanswered.commands).toBe(1);
  });

  it("refuses a window with no room", async () => {
    await expect(Connection.open({ kind: "unix", path: "/nonexistent" }, 100, { commands: 0, bytes: 100 })).rejects.toBeInstanceOf(RangeError);
  });

  it("refuses a batch that pipelines a read after a write, before writing anything", async () => {
    const server = await slowServer(50, 1);
    const connection = await open(server.path);
    const write = RuntimeCommand.setAddress(be, nameSchema.parse("s"), addressSchema.parse("10.0.0.1"), portSchema.parse(80));
    await expect(connection.run([write, RuntimeCommand.showServersState()], 1_000, 64 * 1024)).rejects.toThrow("reads after the write");
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(server.received()).toBe(0);
    // The connection is still usable: nothing was sent.
    expect(await connection.run([write], 1_000, 64 * 1024)).toHaveLength(1);
  });
});
