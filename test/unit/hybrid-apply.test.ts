import { describe, expect, it } from "vitest";
import { UsageError } from "../../agent/errors.js";
import { planHybrid, templateDigest } from "../../agent/hybrid/hybrid-apply.js";
import { parseHybridFlags } from "../../agent/hybrid/hybrid-session.js";
import type { RenderBackend } from "../../agent/hybrid/render-model.js";
import { parseDesiredState, type DesiredState } from "../../agent/model/desired-state.js";
import { asName, asObservedAddress, asPort } from "../../agent/model/values.js";
import { DYNAMIC_PREFIX, type ObservedBackend, type ObservedServer, type ObservedState } from "../../agent/reconcile/observed-state.js";
import { planChanges } from "../../agent/reconcile/planner.js";
import type { SocketReport } from "../../agent/reconcile/reconciler.js";
import { caught } from "../support/helpers.js";

function server(id: number, rawName: string, addr = "0.0.0.0", port = 80, weight = 10): ObservedServer {
  const placeholder = addr === "0.0.0.0";
  return {
    rawName,
    name: asName(rawName),
    id,
    rawAddress: addr,
    address: asObservedAddress(addr),
    port: asPort(port),
    admin: placeholder ? "maint" : "ready",
    adminBits: placeholder ? 5 : 0,
    userWeight: weight,
    initialWeight: 10,
    checked: false,
    dynamic: rawName.startsWith(DYNAMIC_PREFIX),
    status: null,
    sessions: null,
  };
}

function backend(rawName: string, servers: ObservedServer[], algorithm = "static-rr"): ObservedBackend {
  return { rawName, name: asName(rawName), algorithm, servers };
}

/** A report as the reconciler leaves it: its final plan is the real planner's on `observed`. */
function report(observed: ObservedState, desired: DesiredState): SocketReport {
  const final = planChanges(desired.backends, observed, new Map(), { now: 0, drainMs: 0, allowEmpty: false });
  return { socket: "test", plan: final, outcomes: [], final, observed, converged: false };
}

function desired(backends: Record<string, Array<{ address: string; port: number; weight?: number }>>): DesiredState {
  return parseDesiredState({ backends: Object.entries(backends).map(([name, servers]) => ({ name, servers })) }, "test");
}

function lines(b: RenderBackend | undefined): string[] {
  return (b?.servers ?? []).map((s) => `${s.name} ${s.endpoint}${s.disabled ? " disabled" : ""} w${s.weight}`);
}

describe("planHybrid", () => {
  const full = backend("be_static", [server(1, "srv1", "10.0.0.1", 8001), server(2, "srv2", "10.0.0.2", 8002)]);

  it("renders unplaced servers as new slots after every running name, then the spares", () => {
    const want = desired({ be_static: [{ address: "10.0.0.1", port: 8001 }, { address: "10.0.0.2", port: 8002 }, { address: "10.0.0.4", port: 8004, weight: 3 }, { address: "10.0.0.3", port: 8003 }] });
    const plan = planHybrid(report(new Map([["be_static", full]]), want), want, { spareSlots: 2 });
    expect(plan.shortages).toEqual([{ backend: "be_static", endpoints: ["10.0.0.4:8004", "10.0.0.3:8003"] }]);
    expect(lines(plan.context.backends[0])).toEqual([
      "srv1 10.0.0.1:8001 w10",
      "srv2 10.0.0.2:8002 w10",
      "srv3 10.0.0.4:8004 w3",
      "srv4 10.0.0.3:8003 w10",
      "srv5 0.0.0.0:80 disabled w10",
      "srv6 0.0.0.0:80 disabled w10",
    ]);
  });

  it("renders what runs, and only the managed backends, when everything was placed", () => {
    const other = backend("be_other", [server(1, "a1", "10.1.0.1", 80)], "roundrobin");
    const want = desired({ be_static: [{ address: "10.0.0.1", port: 8001 }, { address: "10.0.0.2", port: 8002 }] });
    const plan = planHybrid(report(new Map([["be_static", full], ["be_other", other]]), want), want, { spareSlots: 1 });
    expect(plan.shortages).toEqual([]);
    expect(plan.context.backends.map((b) => b.name)).toEqual(["be_static"]);
    expect(lines(plan.context.backends[0])).toEqual(["srv1 10.0.0.1:8001 w10", "srv2 10.0.0.2:8002 w10", "srv3 0.0.0.0:80 disabled w10"]);
  });

  it("renders a backend HAProxy lacks from the desired state, in name order, and asks for a reload", () => {
    const want = desired({ be_static: [{ address: "10.0.0.1", port: 8001 }, { address: "10.0.0.2", port: 8002 }], be_new: [{ address: "10.2.0.1", port: 80 }] });
    const plan = planHybrid(report(new Map([["be_static", full]]), want), want, { spareSlots: 1 });
    expect(plan.missing).toEqual(["be_new"]);
    expect(plan.shortages).toEqual([]);
    expect(plan.context.backends.map((b) => b.name)).toEqual(["be_new", "be_static"]);
    expect(lines(plan.context.backends[0])).toEqual(["srv1 10.2.0.1:80 w1", "srv2 0.0.0.0:80 disabled w1"]);
  });

  it("never reuses a running name, even a spare slot's, for a new server", () => {
    const gap = backend("be_static", [server(1, "srv1", "10.0.0.1", 8001), server(2, "srv3", "10.0.0.3", 8003)]);
    const want = desired({ be_static: [{ address: "10.0.0.1", port: 8001 }, { address: "10.0.0.3", port: 8003 }, { address: "10.0.0.9", port: 8009 }] });
    const plan = planHybrid(report(new Map([["be_static", gap]]), want), want, { spareSlots: 0 });
    expect(lines(plan.context.backends[0])).toEqual(["srv1 10.0.0.1:8001 w10", "srv3 10.0.0.3:8003 w10", "srv4 10.0.0.9:8009 w10"]);
  });
});

describe("hybrid flags", () => {
  const all = { "config-template": "t.njk", "config-out": "h.cfg", "state-file": "s", "master-socket": "m.sock" };

  it("none: pure Runtime API mode; all four: hybrid mode", () => {
    expect(parseHybridFlags({})).toBeNull();
    expect(parseHybridFlags(all)).toEqual({ templatePath: "t.njk", configFile: "h.cfg", stateFile: "s", masterSocket: "m.sock", spareSlots: 4, varTexts: [] });
  });

  it("a partial set is a usage error naming what is missing", () => {
    const error = caught(() => parseHybridFlags({ "config-template": "t.njk", "state-file": "s" }));
    expect(error).toBeInstanceOf(UsageError);
    expect((error as Error).message).toBe("hybrid mode needs --config-template, --config-out, --state-file and --master-socket together; missing --config-out, --master-socket");
    expect(caught(() => parseHybridFlags({ var: ["a=b"] }))).toBeInstanceOf(UsageError);
    expect(caught(() => parseHybridFlags({ ...all, "spare-slots": "-1" }))).toBeInstanceOf(UsageError);
  });

  it("the template digest changes with the source or a variable, not with the variables' order", () => {
    expect(templateDigest("x", { a: "1", b: "2" })).toBe(templateDigest("x", { b: "2", a: "1" }));
    expect(templateDigest("x", { a: "1" })).not.toBe(templateDigest("y", { a: "1" }));
    expect(templateDigest("x", { a: "1" })).not.toBe(templateDigest("x", { a: "2" }));
  });
});
