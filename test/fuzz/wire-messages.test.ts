import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { InvalidInputError } from "../../agent/errors.js";
import { loadFleetService } from "../../proto/fleet-protocol.js";
import { agentMessageSchema, controllerMessageSchema, LIMITS, parseMessage, type AgentMessage, type ControllerMessage } from "../../proto/messages.js";
import { expectIssues, expectName, expectServable, mutatedJson, outcome } from "./support.js";

/*
 * Messages between controller and agents, as each side receives them: proto-loader decodes the
 * bytes, then parseMessage judges the result. Whatever comes in, it is refused with
 * InvalidInputError naming each issue, or every name and server in it may reach HAProxy.
 */

const HELLO = {
  body: "hello",
  hello: {
    agentId: "lb-1.eu",
    labels: { region: "eu-west-1", "k8s.io/role": "edge" },
    hafleetVersion: "0.1.0",
    sockets: [{ socket: "/run/haproxy/admin.sock", backends: [{ name: "be_app", slots: 10, serving: 3, dynamic: true }] }],
    appliedVersions: { be_app: "v1:abc", be_old: "" },
  },
};
const RESPONSE = { body: "response", response: { nonce: "n-1", results: [{ backend: "be_app", version: "v2", error: "", appliedVersion: "v2" }] } };
const OBSERVED = {
  body: "observed",
  observed: { digest: "d1", backends: [{ backend: "be_app", socket: "/run/haproxy/admin.sock", digest: "d2", serving: 2, drift: [{ endpoint: "10.0.0.1:80", state: "missing" }] }], appliedVersions: { be_app: "v1" } },
};
const HEARTBEAT = { body: "heartbeat", heartbeat: { sentAtMs: 1_764_000_000_000 } };
const PUSH = {
  body: "push",
  push: {
    nonce: "n-2",
    version: "v3",
    backends: [
      { name: "be_app", version: "v1", servers: [{ address: "10.0.0.1", port: 80, weight: 1 }, { address: "2001:db8::1", port: 443 }], allowEmpty: false },
      { name: "be_batch", version: "v2", servers: [], allowEmpty: true },
    ],
    removedBackends: ["be_old"],
  },
};

const AGENT_MESSAGES = [HELLO, RESPONSE, OBSERVED, HEARTBEAT];
const CONTROLLER_MESSAGES = [PUSH, HEARTBEAT];

/** What the controller acts on: names it uses as backend keys must be names. */
function expectValidAgentMessage(message: AgentMessage): void {
  if (message.body === "hello") Object.keys(message.hello.appliedVersions).forEach(expectName);
  if (message.body === "response") message.response.results.forEach((result) => expectName(result.backend));
  const observed = message.body === "observed" ? message.observed : message.body === "response" ? message.response.observed : null;
  observed?.backends.forEach((backend) => expectName(backend.backend));
}

/** What the agent applies: every name and server goes into Runtime API commands. */
function expectValidControllerMessage(message: ControllerMessage): void {
  if (message.body !== "push") return;
  message.push.removedBackends.forEach(expectName);
  for (const backend of message.push.backends) {
    expectName(backend.name);
    expectServable(backend.servers);
  }
}

function judge<T>(schema: Parameters<typeof parseMessage<T>>[0], raw: unknown, check: (message: T) => void): void {
  const result = outcome(() => parseMessage(schema, raw, "fuzz"), InvalidInputError);
  if (result.ok) check(result.value);
  else expectIssues(result.error as InvalidInputError);
}

const judgeAgent = (raw: unknown): void => judge(agentMessageSchema, raw, expectValidAgentMessage);
const judgeController = (raw: unknown): void => judge(controllerMessageSchema, raw, expectValidControllerMessage);

describe("parseMessage", () => {
  it("refuses any JSON value with named issues", () => {
    const raw = fc.oneof(fc.jsonValue({ maxDepth: 4 }), fc.record({ body: fc.constantFrom("hello", "push", "response", "observed", "heartbeat"), hello: fc.jsonValue({ maxDepth: 3 }), push: fc.jsonValue({ maxDepth: 3 }) }));
    fc.assert(
      fc.property(raw, (value) => {
        judgeAgent(value);
        judgeController(value);
      }),
      { seed: 0x3e55, numRuns: 500 },
    );
  });

  it("refuses mutations of valid agent messages with named issues, or passes on only names for backends", () => {
    fc.assert(fc.property(fc.constantFrom(...AGENT_MESSAGES).chain((base) => mutatedJson(base, 4)), judgeAgent), { seed: 0x3e56, numRuns: 500 });
  });

  it("refuses mutations of valid pushes with named issues, or passes on only servable servers", () => {
    fc.assert(fc.property(fc.constantFrom(...CONTROLLER_MESSAGES).chain((base) => mutatedJson(base, 4)), judgeController), { seed: 0x3e57, numRuns: 500 });
  });
});

describe("parseMessage at and over LIMITS", () => {
  const servers = (count: number) => Array.from({ length: count }, (_, i) => ({ address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, port: 80 }));
  const push = (backends: unknown[], removed: string[] = []) => ({ ...PUSH, push: { ...PUSH.push, backends, removedBackends: removed } });
  const hello = (fields: Record<string, unknown>) => ({ ...HELLO, hello: { ...HELLO.hello, ...fields } });
  const response = (error: string) => ({ ...RESPONSE, response: { ...RESPONSE.response, results: [{ ...RESPONSE.response.results[0], error }] } });

  it.each<[string, (count: number) => { schema: "agent" | "controller"; raw: unknown }, number]>([
    ["servers in a backend", (n) => ({ schema: "controller", raw: push([{ name: "be", version: "", servers: servers(n), allowEmpty: false }]) }), LIMITS.serversPerBackend],
    ["backends in a push", (n) => ({ schema: "controller", raw: push(Array.from({ length: n }, (_, i) => ({ name: `be${i}`, version: "", servers: [], allowEmpty: true }))) }), LIMITS.backends],
    ["removed backends", (n) => ({ schema: "controller", raw: push([], Array.from({ length: n }, (_, i) => `be${i}`)) }), LIMITS.backends],
    ["labels", (n) => ({ schema: "agent", raw: hello({ labels: Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, "v"])) }) }), LIMITS.labels],
    ["sockets", (n) => ({ schema: "agent", raw: hello({ sockets: Array.from({ length: n }, () => ({ socket: "/s", backends: [] })) }) }), LIMITS.sockets],
    ["characters of a nack's error", (n) => ({ schema: "agent", raw: response("e".repeat(n)) }), LIMITS.text],
  ])("takes %s up to the limit and refuses one more", (_, make, limit) => {
    const parse = ({ schema, raw }: { schema: "agent" | "controller"; raw: unknown }) => (schema === "agent" ? parseMessage(agentMessageSchema, raw, "limit") : parseMessage(controllerMessageSchema, raw, "limit"));
    expect(() => parse(make(limit))).not.toThrow();
    expect(() => parse(make(limit + 1))).toThrow(InvalidInputError);
  });
});

describe("the protobuf decode path, then parseMessage", () => {
  const { service } = loadFleetService();
  const sync = service["Sync"]!;

  /** Random bytes, and valid encodings cut short, bit-flipped or spliced with random bytes. */
  function bytes(valid: readonly unknown[], serialize: (value: unknown) => Buffer): fc.Arbitrary<Buffer> {
    const encodings = valid.map((message) => serialize(message));
    const damaged = fc.tuple(fc.constantFrom(...encodings), fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { minLength: 1, maxLength: 6 }), fc.nat(), fc.uint8Array({ maxLength: 16 })).map(([encoding, flips, cut, extra]) => {
      const copy = Buffer.from(encoding);
      for (const [at, value] of flips) copy[at % copy.length] = value;
      const keep = cut % (copy.length + 1);
      return Buffer.concat([copy.subarray(0, keep), extra, copy.subarray(keep)]);
    });
    return fc.oneof(fc.uint8Array({ maxLength: 200 }).map((array) => Buffer.from(array)), damaged);
  }

  /** A decode error is grpc-js's to report (the call fails); whatever does decode is judged as parseMessage's caller would. */
  function judgeDecoded(buffer: Buffer, deserialize: (buffer: Buffer) => unknown, judgeMessage: (raw: unknown) => void): void {
    let raw: unknown;
    try {
      raw = deserialize(buffer);
    } catch {
      return;
    }
    judgeMessage(raw);
  }

  it("refuses whatever an agent's bytes decode to with named issues, or passes on only names", () => {
    const property = fc.property(bytes(AGENT_MESSAGES, sync.requestSerialize), (buffer) => judgeDecoded(buffer, sync.requestDeserialize, judgeAgent));
    fc.assert(property, { seed: 0xb17e1, numRuns: 1_000 });
  });

  it("refuses whatever a controller's bytes decode to with named issues, or passes on only servable servers", () => {
    const property = fc.property(bytes(CONTROLLER_MESSAGES, sync.responseSerialize), (buffer) => judgeDecoded(buffer, sync.responseDeserialize, judgeController));
    fc.assert(property, { seed: 0xb17e2, numRuns: 1_000 });
  });
});
