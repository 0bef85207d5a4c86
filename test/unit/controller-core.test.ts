import { describe, expect, it } from "vitest";
import { parseDesiredState, type DesiredServer } from "../../agent/model/desired-state.js";
import { nameSchema } from "../../agent/model/values.js";
import { AgentSession } from "../../controller/core/agent-session.js";
import type { BackendMapping } from "../../controller/config/controller-config.js";
import { DesiredStore } from "../../controller/core/desired-store.js";
import { guardStep } from "../../controller/core/guard.js";
import { backendVersion, setVersion } from "../../controller/core/versions.js";
import type { Hello } from "../../proto/messages.js";

function servers(...ports: number[]): DesiredServer[] {
  return parseDesiredState({ backends: [{ name: "b", servers: ports.map((port) => ({ address: "10.0.0.1", port })) }] }, "t").backends[0]!.servers;
}

const hello = (appliedVersions: Record<string, string> = {}, labels: Record<string, string> = {}): Hello =>
  ({ agentId: "a1", labels, hafleetVersion: "0.1.0", sockets: [], appliedVersions }) as Hello;

describe("versions", () => {
  it("are the same for the same content in any order, and differ otherwise", () => {
    expect(backendVersion(servers(1, 2, 3), false)).toBe(backendVersion(servers(3, 1, 2), false));
    expect(backendVersion(servers(1, 2), false)).not.toBe(backendVersion(servers(1, 3), false));
    expect(backendVersion(servers(1), false)).not.toBe(backendVersion(servers(1), true));
    expect(backendVersion(servers(1), false)).toMatch(/^[0-9a-f]{16}$/);
    expect(setVersion(new Map([["a", "1"], ["b", "2"]]))).toBe(setVersion(new Map([["b", "2"], ["a", "1"]])));
  });
});

describe("the guard against empty or truncated discovery answers", () => {
  const options = { maxDropShare: 0.5, allowEmpty: false, maxServers: 4 };
  it("takes the first answer, growth, and shrinking within the share", () => {
    expect(guardStep(undefined, [], options)).toEqual({ accept: true });
    expect(guardStep(servers(1, 2), servers(1, 2, 3), options)).toEqual({ accept: true });
    expect(guardStep(servers(1, 2, 3, 4), servers(1, 2), options)).toEqual({ accept: true });
  });
  it("holds an empty answer and a drop over the share, unless allowed", () => {
    expect(guardStep(servers(1, 2), [], options)).toEqual({ accept: false, reason: "would drop all 2 servers" });
    expect(guardStep(servers(1, 2, 3, 4), servers(1), options)).toEqual({ accept: false, reason: "would drop 3 of 4 servers (75%, over the 50% limit)" });
    expect(guardStep(servers(1, 2), [], { ...options, allowEmpty: true })).toEqual({ accept: true });
  });
  it("holds an answer over limits.serversPerBackend, first or not, allowed empty or not", () => {
    const reason = "has 5 servers, over the limit of 4 (limits.serversPerBackend)";
    expect(guardStep(undefined, servers(1, 2, 3, 4, 5), options)).toEqual({ accept: false, reason });
    expect(guardStep(servers(1, 2), servers(1, 2, 3, 4, 5), { ...options, allowEmpty: true })).toEqual({ accept: false, reason });
    expect(guardStep(servers(1, 2), servers(1, 2, 3, 4), options)).toEqual({ accept: true });
  });
});

const GUARD = { maxDropShare: 0.5, maxServers: 4 };

describe("the desired store", () => {
  const be = (name: string) => nameSchema.parse(name);
  const mappings: BackendMapping[] = [
    { backend: be("be_web"), service: "web", allowEmpty: false, staged: false },
    { backend: be("be_web_eu"), service: "web", tag: "eu", agents: { region: "eu" }, allowEmpty: false, staged: false },
    { backend: be("be_api"), service: "api", allowEmpty: true, staged: false },
  ];

  it("watches each service and tag once, whatever the number of backends", () => {
    expect(new DesiredStore(mappings, GUARD).watches()).toEqual([
      { service: "web", tag: null, scope: {} },
      { service: "web", tag: "eu", scope: {} },
      { service: "api", tag: null, scope: {} },
    ]);
  });

  it("publishes a backend only once discovery answered for it, and to the agents its selector picks", () => {
    const store = new DesiredStore(mappings, GUARD);
    expect(store.backendsFor({ region: "eu" })).toEqual([]);
    expect(store.apply({ key: "web", servers: servers(1), dropped: [] }).changed).toEqual(["be_web"]);
    expect(store.apply({ key: "web#eu", servers: servers(2), dropped: [] }).changed).toEqual(["be_web_eu"]);
    expect(store.backendsFor({ region: "eu" }).map((b) => b.name)).toEqual(["be_web", "be_web_eu"]);
    expect(store.backendsFor({ region: "us" }).map((b) => b.name)).toEqual(["be_web"]);
  });

  it("hands agents with the same labels the same set until the next change", () => {
    const store = new DesiredStore(mappings, GUARD);
    store.apply({ key: "web", servers: servers(1), dropped: [] });
    const first = store.backendsFor({ region: "eu", role: "edge" });
    expect(store.backendsFor({ role: "edge", region: "eu" })).toBe(first);
    expect(store.backendsFor({ region: "us" })).not.toBe(first);
    store.apply({ key: "web", servers: servers(1, 2), dropped: [] });
    const after = store.backendsFor({ region: "eu", role: "edge" });
    expect(after).not.toBe(first);
    expect(after[0]!.servers).toHaveLength(2);
  });

  it("reports no change for the same content", () => {
    const store = new DesiredStore(mappings, GUARD);
    store.apply({ key: "web", servers: servers(1, 2), dropped: [] });
    expect(store.apply({ key: "web", servers: servers(2, 1), dropped: [] }).changed).toEqual([]);
  });

  it("holds a backend at its last good set when discovery empties it, and flags it", () => {
    const store = new DesiredStore(mappings, GUARD);
    store.apply({ key: "web", servers: servers(1, 2, 3), dropped: [] });
    const before = store.backendsFor({})[0]!;
    expect(store.apply({ key: "web", servers: [], dropped: [] })).toEqual({ changed: [], held: [{ backend: "be_web", reason: "would drop all 3 servers" }] });
    const after = store.backendsFor({})[0]!;
    expect(after.servers).toEqual(before.servers);
    expect(after.version).toBe(before.version);
    expect(after.held).toBe("would drop all 3 servers");
    // A plausible answer again lifts the hold.
    expect(store.apply({ key: "web", servers: servers(1, 2), dropped: [] }).changed).toEqual(["be_web"]);
    expect(store.backendsFor({})[0]!.held).toBeNull();
  });

  it("publishes nothing for a backend whose first answer is over the limit, yet counts it as answered", () => {
    const store = new DesiredStore(mappings, GUARD);
    store.apply({ key: "web", servers: servers(1), dropped: [] });
    store.apply({ key: "web#eu", servers: servers(1), dropped: [] });
    expect(store.apply({ key: "api", servers: servers(1, 2, 3, 4, 5), dropped: [] })).toEqual({
      changed: [],
      held: [{ backend: "be_api", reason: "has 5 servers, over the limit of 4 (limits.serversPerBackend)" }],
    });
    expect(store.backendsFor({}).map((b) => b.name)).toEqual(["be_web"]);
    // Waiting for an answer that came would hold every push of the fleet.
    expect(store.ready()).toBe(true);
  });

  it("lets an operator-allowed backend be emptied", () => {
    const store = new DesiredStore(mappings, GUARD);
    store.apply({ key: "api", servers: servers(1), dropped: [] });
    expect(store.apply({ key: "api", servers: [], dropped: [] }).changed).toEqual(["be_api"]);
    expect(store.backendsFor({}).find((b) => b.name === "be_api")!.servers).toEqual([]);
  });
});

describe("an agent's session", () => {
  const state = (name: string, ...ports: number[]) => {
    const list = servers(...ports);
    return { name: nameSchema.parse(name), servers: list, version: backendVersion(list, false), allowEmpty: false, held: null, dropped: [] };
  };
  const ack = (nonce: string, ...backends: Array<[string, string]>) => ({ nonce, results: backends.map(([backend, version]) => ({ backend: nameSchema.parse(backend), version, error: "", appliedVersion: version })) });

  it("pushes what the agent lacks, with a stream-scoped nonce, and nothing once acked", () => {
    const session = new AgentSession(hello(), "s1");
    const desired = [state("be", 1, 2)];
    const push = session.nextPush(desired, 1000)!;
    expect(push.nonce).toBe("s1-1");
    expect(push.backends.map((b) => [b.name, b.version])).toEqual([["be", desired[0]!.version]]);
    expect(session.onResponse(ack("s1-1", ["be", desired[0]!.version]), 1250)).toEqual({ acked: [{ backend: "be", version: desired[0]!.version }], nacked: [], latencyMs: 250 });
    expect(session.nextPush(desired, 2000)).toBeNull();
  });

  it("sends nothing to a reconnecting agent that already runs the current versions", () => {
    const desired = [state("be", 1)];
    expect(new AgentSession(hello({ be: desired[0]!.version }), "s2").nextPush(desired, 0)).toBeNull();
  });

  it("keeps one push in flight; later changes merge into the next one (latest wins)", () => {
    const session = new AgentSession(hello(), "s");
    const first = session.nextPush([state("a", 1)], 0)!;
    expect(session.nextPush([state("a", 2), state("b", 3)], 1)).toBeNull();
    session.onResponse(ack(first.nonce, ["a", state("a", 1).version]), 2);
    const next = session.nextPush([state("a", 4), state("b", 3)], 3)!;
    expect(next.backends.map((b) => [b.name, b.version])).toEqual([
      ["a", state("a", 4).version],
      ["b", state("b", 3).version],
    ]);
  });

  it("takes a nacked version as acked once the agent reports it applied it on its own, and only that version", () => {
    const session = new AgentSession(hello(), "s");
    const desired = [state("a", 1)];
    const version = desired[0]!.version;
    const push = session.nextPush(desired, 0)!;
    session.onResponse({ nonce: push.nonce, results: [{ backend: nameSchema.parse("a"), version, error: "connection lost", appliedVersion: "" }] }, 1);
    expect(session.onObserved({ a: "" })).toEqual([]);
    expect(session.onObserved({ a: "someone-else" })).toEqual([]);
    expect(session.onObserved({ a: version })).toEqual([{ backend: "a", version }]);
    expect(session.appliedVersions()).toEqual(new Map([["a", version]]));
    expect(session.onObserved({ a: version })).toEqual([]);
    expect(session.nextPush(desired, 2)).toBeNull();
  });

  it("leaves a nack with a push of that backend in flight to the push's response", () => {
    const session = new AgentSession(hello(), "s");
    const first = session.nextPush([state("a", 1)], 0)!;
    session.onResponse({ nonce: first.nonce, results: [{ backend: nameSchema.parse("a"), version: state("a", 1).version, error: "down", appliedVersion: "" }] }, 1);
    session.nextPush([state("a", 2)], 2);
    expect(session.onObserved({ a: state("a", 1).version })).toEqual([]);
  });

  it("ignores a response whose nonce is not the one in flight", () => {
    const session = new AgentSession(hello(), "s");
    session.nextPush([state("a", 1)], 0);
    expect(session.onResponse(ack("s-9", ["a", state("a", 1).version]), 1)).toBeNull();
    expect(session.busy).toBe(true);
  });

  it("does not resend a nacked version: it holds until the desired state changes", () => {
    const session = new AgentSession(hello(), "s");
    const desired = [state("a", 1)];
    const push = session.nextPush(desired, 0)!;
    const outcome = session.onResponse({ nonce: push.nonce, results: [{ backend: nameSchema.parse("a"), version: desired[0]!.version, error: "backend-missing", appliedVersion: "" }] }, 5);
    expect(outcome!.nacked).toEqual([{ backend: "a", version: desired[0]!.version, error: "backend-missing" }]);
    expect(session.nextPush(desired, 10)).toBeNull();
    expect(session.sync(desired).get(nameSchema.parse("a"))).toEqual({ state: "rejected", version: desired[0]!.version, error: "backend-missing", appliedVersion: "" });
    expect(session.nextPush([state("a", 2)], 20)!.backends.map((b) => b.name)).toEqual(["a"]);
  });

  it("sends the acked version again when the desired state goes back to it after a nack (a rollback)", () => {
    const v1 = state("a", 1);
    const session = new AgentSession(hello({ a: v1.version }), "s");
    const push = session.nextPush([state("a", 2)], 0)!;
    session.onResponse({ nonce: push.nonce, results: [{ backend: nameSchema.parse("a"), version: state("a", 2).version, error: "no-free-slot", appliedVersion: v1.version }] }, 5);
    // The agent stored the version it could not apply and retries it: it must be told to drop it.
    expect(session.sync([v1]).get(nameSchema.parse("a"))!.state).toBe("not-sent");
    const back = session.nextPush([v1], 10)!;
    expect(back.backends.map((b) => [b.name, b.version])).toEqual([["a", v1.version]]);
    session.onResponse(ack(back.nonce, ["a", v1.version]), 11);
    expect(session.sync([v1]).get(nameSchema.parse("a"))!.state).toBe("synced");
    expect(session.nextPush([v1], 12)).toBeNull();
  });

  it("treats a backend missing from the response as a nack", () => {
    const session = new AgentSession(hello(), "s");
    const push = session.nextPush([state("a", 1), state("b", 2)], 0)!;
    const outcome = session.onResponse(ack(push.nonce, ["a", state("a", 1).version]), 1)!;
    expect(outcome.nacked.map((n) => [n.backend, n.error])).toEqual([["b", "the agent sent no result for this backend"]]);
  });

  it("tells the agent about backends it should no longer manage, once", () => {
    const session = new AgentSession(hello({ a: state("a", 1).version, old: "0123456789abcdef" }), "s");
    const push = session.nextPush([state("a", 1)], 0)!;
    expect(push.backends).toEqual([]);
    expect(push.removedBackends).toEqual(["old"]);
    session.onResponse({ nonce: push.nonce, results: [] }, 1);
    expect(session.nextPush([state("a", 1)], 2)).toBeNull();
  });

  it("removes a backend the agent manages but never applied, once no longer assigned", () => {
    const session = new AgentSession(hello({ a: state("a", 1).version, never: "" }), "s");
    const push = session.nextPush([state("a", 1)], 0)!;
    expect(push.removedBackends).toEqual(["never"]);
    session.onResponse({ nonce: push.nonce, results: [] }, 1);
    expect(session.nextPush([state("a", 1)], 2)).toBeNull();
  });

  it("reports per-backend sync: synced, pending, not sent", () => {
    const session = new AgentSession(hello({ a: state("a", 1).version }), "s");
    const desired = [state("a", 1), state("b", 2)];
    session.nextPush(desired, 7);
    const sync = session.sync([...desired, state("c", 3)]);
    expect([...sync.values()].map((s) => s.state)).toEqual(["synced", "pending", "not-sent"]);
  });
});
