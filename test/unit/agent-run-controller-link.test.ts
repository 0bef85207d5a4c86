import { EventEmitter } from "node:events";
import { describe, expect, it } from "vitest";
import { backoffDelay, CHANNEL_OPTIONS, readControllerMessage, StreamWriter, type OutgoingMessage } from "../../agent/run/controller-link.js";

const server = { address: "10.0.0.1", port: 80 };

function rawPush(push: Record<string, unknown>): unknown {
  return { body: "push", push: { nonce: "n1", version: "set", backends: [], removedBackends: [], ...push } };
}

function backend(name: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name, version: "v1", servers: [server], allowEmpty: false, ...extra };
}

describe("readControllerMessage", () => {
  it("passes a valid push through, canonical and stripped of proto-loader's extra keys", () => {
    const input = readControllerMessage(rawPush({ backends: [backend("be_a", { servers: [{ address: "2001:DB8::1", port: 80, weight: 3, _weight: "weight" }] })], removedBackends: ["be_old"] }));
    expect(input).toEqual({
      kind: "push",
      push: { nonce: "n1", version: "set", backends: [{ name: "be_a", version: "v1", allowEmpty: false, servers: [{ address: "2001:db8::1", port: 80, weight: 3 }] }], removedBackends: ["be_old"] },
    });
  });

  it("keeps an absent weight absent (the slot's own weight), not 0", () => {
    const input = readControllerMessage(rawPush({ backends: [backend("be_a")] }));
    expect(input.kind === "push" && "weight" in input.push.backends[0]!.servers[0]!).toBe(false);
  });

  it("reads heartbeats", () => {
    expect(readControllerMessage({ body: "heartbeat", heartbeat: { sentAtMs: 5 } })).toEqual({ kind: "heartbeat" });
  });

  it("refuses a push with a command smuggled into an address, for every backend it names", () => {
    const input = readControllerMessage(rawPush({ backends: [backend("be_a", { servers: [{ address: "1.2.3.4;show info", port: 80 }] }), backend("be_b", { version: "v7" })] }));
    expect(input).toMatchObject({ kind: "invalid-push", nonce: "n1", backends: [{ name: "be_a", version: "v1" }, { name: "be_b", version: "v7" }] });
    const error = input.kind === "invalid-push" ? input.error : "";
    expect(error).toMatch(/^push refused, nothing applied: controller message: push\.backends\[0\]\.servers\[0\]\.address: must be an IPv4 or IPv6 literal/);
    expect(error).toContain('"1.2.3.4;show info"');
  });

  const invalid: Array<[string, Record<string, unknown>, RegExp]> = [
    ["a port out of range", { backends: [backend("be_a", { servers: [{ address: "10.0.0.1", port: 70000 }] })] }, /port/],
    ["a weight out of range", { backends: [backend("be_a", { servers: [{ address: "10.0.0.1", port: 80, weight: 300 }] })] }, /weight/],
    ["a duplicate server", { backends: [backend("be_a", { servers: [server, server] })] }, /duplicates/],
    ["the unspecified address", { backends: [backend("be_a", { servers: [{ address: "0.0.0.0", port: 80 }] })] }, /unspecified/],
    ["a backend pushed twice", { backends: [backend("be_a"), backend("be_a")] }, /be_a is pushed twice/],
    ["a backend pushed and removed", { backends: [backend("be_a")], removedBackends: ["be_a"] }, /be_a is both pushed and removed/],
    ["a bad set version", { version: "no spaces allowed", backends: [backend("be_a")] }, /version/],
  ];
  it.each(invalid)("refuses a push with %s", (_, push, message) => {
    const input = readControllerMessage(rawPush(push));
    expect(input.kind).toBe("invalid-push");
    expect(input.kind === "invalid-push" && input.error).toMatch(message);
  });

  it("nacks only the names that can be put in a result, and a bad version as none", () => {
    const input = readControllerMessage(rawPush({ backends: [backend("be;a"), backend("be_b", { version: "bad version", servers: "x" }), backend(7), backend("be_b")] }));
    expect(input).toMatchObject({ kind: "invalid-push", backends: [{ name: "be_b", version: "" }] });
  });

  it("ignores an invalid push that names no backend it could answer for, or has no usable nonce", () => {
    expect(readControllerMessage(rawPush({ version: "bad version" })).kind).toBe("ignored");
    expect(readControllerMessage(rawPush({ backends: [backend("be;a")] })).kind).toBe("ignored");
    expect(readControllerMessage(rawPush({ nonce: 5, backends: [backend("be_a", { servers: [] })], version: "bad version" })).kind).toBe("ignored");
    expect(readControllerMessage(rawPush({ nonce: "n".repeat(300), backends: [backend("be_a")] })).kind).toBe("ignored");
  });

  it("ignores anything else it cannot read", () => {
    for (const raw of [null, "push", [], {}, { body: "other" }, { body: "heartbeat", heartbeat: { sentAtMs: -1 } }, { body: "push" }]) {
      expect(readControllerMessage(raw).kind).toBe("ignored");
    }
  });
});

describe("backoffDelay", () => {
  const backoff = { initialMs: 200, maxMs: 10_000 };

  it("is full jitter: anywhere from 0 to the exponential cap", () => {
    expect(backoffDelay(0, backoff, () => 0)).toBe(0);
    expect(backoffDelay(0, backoff, () => 0.999999)).toBe(199);
    expect(backoffDelay(1, backoff, () => 0.5)).toBe(200);
    expect(backoffDelay(3, backoff, () => 0.999999)).toBe(1599);
  });

  it("stops growing at the maximum, however many failures", () => {
    expect(backoffDelay(6, backoff, () => 0.999999)).toBe(9999);
    expect(backoffDelay(10_000, backoff, () => 0.999999)).toBe(9999);
  });

  it("spreads attempts out (Math.random by default)", () => {
    const delays = new Set(Array.from({ length: 50 }, () => backoffDelay(4, backoff)));
    expect(delays.size).toBeGreaterThan(10);
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...delays)).toBeLessThan(3200);
  });
});

/** A call whose buffer is "full" whenever `full` is set, like grpc-js under flow control. */
class FakeCall extends EventEmitter {
  written: OutgoingMessage[] = [];
  full = false;
  throws = false;
  write(message: OutgoingMessage): boolean {
    if (this.throws) throw new Error("write after end");
    this.written.push(message);
    return !this.full;
  }
}

const beat = (sentAtMs: number): OutgoingMessage => ({ heartbeat: { sentAtMs } });
const flush = () => new Promise((resolve) => setImmediate(resolve));

describe("StreamWriter", () => {
  it("writes in order while the stream takes them", async () => {
    const call = new FakeCall();
    const writer = new StreamWriter(call);
    await Promise.all([writer.send(beat(1)), writer.send(beat(2))]);
    expect(call.written).toEqual([beat(1), beat(2)]);
    expect(writer.backlog).toBe(0);
  });

  it("writes nothing more after write() returned false until 'drain'", async () => {
    const call = new FakeCall();
    const writer = new StreamWriter(call);
    call.full = true;
    const first = writer.send(beat(1));
    const second = writer.send(beat(2));
    await flush();
    expect(call.written).toEqual([beat(1)]);
    expect(writer.backlog).toBe(2);
    call.full = false;
    call.emit("drain");
    await Promise.all([first, second]);
    expect(call.written).toEqual([beat(1), beat(2)]);
    expect(writer.backlog).toBe(0);
    expect(call.listenerCount("drain")).toBe(0);
  });

  it("drops what is left when closed, and releases a write waiting for 'drain'", async () => {
    const call = new FakeCall();
    const writer = new StreamWriter(call);
    call.full = true;
    const waiting = writer.send(beat(1));
    const queued = writer.send(beat(2));
    await flush();
    writer.close();
    await Promise.all([waiting, queued, writer.send(beat(3))]);
    expect(call.written).toEqual([beat(1)]);
    expect(call.listenerCount("drain")).toBe(0);
  });

  it("takes a write that throws (the call ended) as closed, without rejecting", async () => {
    const call = new FakeCall();
    const writer = new StreamWriter(call);
    call.throws = true;
    await expect(writer.send(beat(1))).resolves.toBeUndefined();
    call.throws = false;
    await writer.send(beat(2));
    expect(call.written).toEqual([]);
  });
});

describe("CHANNEL_OPTIONS", () => {
  it("turns on transport keepalive, also between calls", () => {
    expect(CHANNEL_OPTIONS).toMatchObject({ "grpc.keepalive_time_ms": 30_000, "grpc.keepalive_timeout_ms": 10_000, "grpc.keepalive_permit_without_calls": 1 });
  });
});
