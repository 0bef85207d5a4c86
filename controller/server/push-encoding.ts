import type * as grpc from "@grpc/grpc-js";
import type { DesiredPush } from "../../proto/messages.js";

/*
 * A change goes to every agent, and agents with the same labels and the same acked versions
 * get the same push but for its nonce. Protobuf encoding was the largest part of the
 * controller's cost per push, so each distinct push is encoded once and the nonce spliced in
 * per agent. Protobuf allows it: the fields of a message may come in any order, so
 * `push body without nonce` + `nonce field` is the same DesiredPush as any other encoding.
 */

/** Field 1, length-delimited: both ControllerMessage.push and DesiredPush.nonce. */
const FIELD_1_BYTES = 0x0a;
/**
 * Encoded pushes kept, in bytes: a fleet has a handful of distinct pushes at a time, but each
 * change makes new ones, and a backend of 10,000 servers encodes to ~200 KB. The oldest go first.
 */
export const MAX_CACHED_BYTES = 32 * 1024 * 1024;

export type Serialize = (message: object) => Buffer;

export class PushEncoder {
  private readonly bodies = new Map<string, Buffer>();
  private bytes = 0;

  constructor(
    private readonly serialize: Serialize,
    private readonly maxBytes = MAX_CACHED_BYTES,
  ) {}

  /** What the cache holds now, for its bound to be seen. */
  get cachedBytes(): number {
    return this.bytes;
  }

  /** The ControllerMessage `{ push }` as it goes on the wire. */
  encode(push: DesiredPush): Buffer {
    const key = pushKey(push);
    let body = this.bodies.get(key);
    if (body === undefined) {
      body = withoutOuterField(this.serialize({ push: { ...push, nonce: "" } }));
      this.bodies.set(key, body);
      this.bytes += body.length;
      // A Map iterates in insertion order: the first keys are the oldest pushes.
      for (const [oldest, evicted] of this.bodies) {
        if (this.bytes <= this.maxBytes || oldest === key) break;
        this.bodies.delete(oldest);
        this.bytes -= evicted.length;
      }
    }
    const nonce = lengthDelimited(Buffer.from(push.nonce, "utf8"));
    return Buffer.concat([Buffer.from([FIELD_1_BYTES]), varint(body.length + nonce.length), body, nonce]);
  }
}

/**
 * A service definition whose server side writes Buffers as they are (pre-encoded pushes) and
 * encodes anything else as usual.
 */
export function acceptingEncoded(service: grpc.ServiceDefinition): grpc.ServiceDefinition {
  return Object.fromEntries(
    Object.entries(service).map(([name, method]) => {
      const serialize = method.responseSerialize;
      return [name, { ...method, responseSerialize: (value: unknown) => (Buffer.isBuffer(value) ? value : serialize(value)) }];
    }),
  );
}

// Versions are content digests (the set version covers every backend version, a backend
// version its servers and options), so these fields name the content exactly.
function pushKey(push: DesiredPush): string {
  const backends = push.backends.map((backend) => `${backend.name}@${backend.version}`).join(",");
  return `${push.version}|${backends}|${push.removedBackends.join(",")}`;
}

/** The value of the one length-delimited field 1 that `{ push }` encodes to. */
function withoutOuterField(message: Buffer): Buffer {
  if (message[0] !== FIELD_1_BYTES) throw new Error("a ControllerMessage push did not encode as field 1");
  let offset = 1;
  let length = 0;
  for (let shift = 0; ; shift += 7) {
    const byte = message[offset++];
    if (byte === undefined || shift > 28) throw new Error("a ControllerMessage push encoded with a bad length");
    length += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) break;
  }
  if (offset + length !== message.length) throw new Error("a ControllerMessage push encoded with more than its push field");
  return message.subarray(offset);
}

function lengthDelimited(value: Buffer): Buffer {
  return Buffer.concat([Buffer.from([FIELD_1_BYTES]), varint(value.length), value]);
}

function varint(value: number): Buffer {
  const bytes: number[] = [];
  let rest = value;
  while (rest >= 0x80) {
    bytes.push((rest % 0x80) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}
