import { describe, expect, it } from "vitest";
import { PushEncoder, acceptingEncoded } from "../../controller/server/push-encoding.js";
import { loadFleetService } from "../../proto/fleet-protocol.js";
import { controllerMessageSchema, desiredPushSchema, parseMessage, type DesiredPush } from "../../proto/messages.js";

const sync = loadFleetService().service["Sync"]!;
const serialize = (message: object): Buffer => sync.responseSerialize(message);
const decode = (bytes: Buffer): unknown => parseMessage(controllerMessageSchema, sync.responseDeserialize(bytes), "test");

function push(nonce: string, servers: number, removed: string[] = []): DesiredPush {
  return parseMessage(
    desiredPushSchema,
    {
        nonce,
        version: "set-1",
        backends: [{ name: "be_app", version: `v${servers}`, allowEmpty: servers === 0, servers: Array.from({ length: servers }, (_, i) => ({ address: `10.1.${i >> 8}.${i & 255}`, port: 8080, weight: i % 257 })) }],
        removedBackends: removed,
    },
    "test",
  );
}

describe("PushEncoder", () => {
  it.each([
    ["an empty server list", 0],
    ["one server (short lengths)", 1],
    ["3,000 servers (multi-byte lengths)", 3_000],
  ])("%s: decodes to exactly what the normal encoding decodes to", (_, servers) => {
    const encoder = new PushEncoder(serialize);
    const message = { push: push("abcd1234-7", servers, ["be_old"]) };
    expect(decode(encoder.encode(message.push))).toEqual(decode(serialize(message)));
  });

  it("reuses the body for the same push content and still gives each agent its own nonce", () => {
    let encodings = 0;
    const encoder = new PushEncoder((message) => {
      encodings++;
      return serialize(message);
    });
    const first = decode(encoder.encode(push("stream-a-1", 5)));
    const second = decode(encoder.encode(push("stream-b-1", 5)));
    expect(encodings).toBe(1);
    expect(first).toMatchObject({ push: { nonce: "stream-a-1" } });
    expect(second).toMatchObject({ push: { nonce: "stream-b-1" } });
    encoder.encode(push("stream-c-1", 6));
    expect(encodings).toBe(2);
  });

  it("keeps at most its bytes of encoded pushes, dropping the oldest first", () => {
    let encodings = 0;
    const one = new PushEncoder(serialize).encode(push("n", 1_000)).length;
    // Room for two pushes of 1,000 servers, not three.
    const encoder = new PushEncoder((message) => {
      encodings++;
      return serialize(message);
    }, one * 2.5);
    for (const servers of [1_000, 1_001, 1_002]) encoder.encode(push("n", servers));
    expect(encoder.cachedBytes).toBeLessThanOrEqual(one * 2.5);
    expect(encodings).toBe(3);
    encoder.encode(push("n", 1_002));
    encoder.encode(push("n", 1_001));
    expect(encodings).toBe(3);
    encoder.encode(push("n", 1_000));
    expect(encodings).toBe(4);
    // A push bigger than the whole bound is still encoded, and kept only until the next.
    const tiny = new PushEncoder(serialize, 10);
    expect(decode(tiny.encode(push("x", 50)))).toEqual(decode(serialize({ push: push("x", 50) })));
    tiny.encode(push("x", 51));
    const alone = new PushEncoder(serialize);
    alone.encode(push("x", 51));
    expect(tiny.cachedBytes).toBe(alone.cachedBytes);
  });

  it("an empty nonce still decodes as the push", () => {
    const encoder = new PushEncoder(serialize);
    expect(decode(encoder.encode(push("", 2)))).toEqual(decode(serialize({ push: push("", 2) })));
  });

  it("the service definition passes pre-encoded bytes through and encodes everything else", () => {
    const service = acceptingEncoded(loadFleetService().service);
    const bytes = Buffer.from([1, 2, 3]);
    expect(service["Sync"]!.responseSerialize(bytes)).toBe(bytes);
    expect(service["Sync"]!.responseSerialize({ heartbeat: { sentAtMs: 5 } })).toEqual(serialize({ heartbeat: { sentAtMs: 5 } }));
  });
});
