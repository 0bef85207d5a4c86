import { describe, expect, it } from "vitest";
import { parseDesiredState, type DesiredServer } from "../../agent/model/desired-state.js";
import { nameSchema } from "../../agent/model/values.js";
import type { BackendMapping } from "../../controller/config/controller-config.js";
import { AgentSession } from "../../controller/core/agent-session.js";
import { DesiredStore, mappingWatchKey } from "../../controller/core/desired-store.js";
import { backendVersion } from "../../controller/core/versions.js";
import type { Hello } from "../../proto/messages.js";

// Readiness per backend: the fleet waits for every backend's first answer at most readyWaitMs;
// then what answered is published, and what did not is never removed from an agent.

function servers(...ports: number[]): DesiredServer[] {
  return parseDesiredState({ backends: [{ name: "b", servers: ports.map((port) => ({ address: "10.0.0.1", port })) }] }, "t").backends[0]!.servers;
}

const be = (name: string) => nameSchema.parse(name);
const GUARD = { maxDropShare: 0.5, maxServers: 10 };
const mappings: BackendMapping[] = [
  { backend: be("be_web"), service: "web", allowEmpty: false, staged: false },
  { backend: be("be_pay"), service: "pay", allowEmpty: false, staged: false },
  { backend: be("be_eu"), service: "web", tag: "eu", agents: { region: "eu" }, allowEmpty: false, staged: false },
];

describe("readiness per backend", () => {
  it("is ready when every backend answered, or once readyWaitMs ran out; pending names what has not answered", () => {
    let now = 1_000;
    const store = new DesiredStore(mappings, GUARD, { readyWaitMs: 10_000, clock: () => now });
    expect(store.ready()).toBe(false);
    expect(store.readyInMs()).toBe(10_000);
    store.apply({ key: "web", servers: servers(1), dropped: [] });
    expect(store.pending()).toEqual(["be_pay", "be_eu"]);
    now += 9_999;
    expect(store.ready()).toBe(false);
    now += 1;
    expect(store.ready()).toBe(true);
    expect(store.readyInMs()).toBeNull();
    expect([...store.pendingFor({})]).toEqual(["be_pay"]);
    expect([...store.pendingFor({ region: "eu" })]).toEqual(["be_pay", "be_eu"]);
    store.apply({ key: "pay", servers: servers(2), dropped: [] });
    store.apply({ key: "web#eu", servers: servers(3), dropped: [] });
    expect(store.pending()).toEqual([]);
  });

  it("keys a mapping's watch by its Consul scope, so two datacenters of one service are two watches", () => {
    const far: BackendMapping = { backend: be("be_far"), service: "web", dc: "dc2", tags: ["b", "a"], allowEmpty: false, staged: false };
    expect(mappingWatchKey(mappings[0]!)).toBe("web");
    expect(mappingWatchKey(far)).toBe("web?dc=dc2&tags=a%2Cb");
    expect(new DesiredStore([mappings[0]!, far], GUARD).watches()).toEqual([
      { service: "web", tag: null, scope: {} },
      { service: "web", tag: null, scope: { dc: "dc2", tags: ["b", "a"] } },
    ]);
  });

  it("never removes from an agent a backend that is mapped to it but not published yet", () => {
    const list = servers(1);
    const web = { name: be("be_web"), servers: list, version: backendVersion(list, false), allowEmpty: false, held: null, dropped: [] };
    const hello = { agentId: "a1", labels: {}, hafleetVersion: "0.1.0", sockets: [], appliedVersions: { be_pay: "v-pay", be_gone: "v-gone" } } as unknown as Hello;
    const push = new AgentSession(hello, "s").nextPush([web], 0, new Set(["be_pay"]))!;
    expect(push.backends.map((backend) => backend.name)).toEqual(["be_web"]);
    // be_gone is mapped no more: removed; be_pay is mapped but pending: kept.
    expect(push.removedBackends).toEqual(["be_gone"]);
  });
});
