import { describe, expect, it } from "vitest";
import { ConsulConnectError, ConsulHttpError, ConsulIdleCutError, retryAfterMs } from "../../controller/discovery/consul/consul-client.js";
import { classifyFailure, retryDelay } from "../../controller/discovery/consul/consul-failure.js";
import { ConsulAnswerError } from "../../controller/discovery/consul/consul-response.js";
import { describeBudget, planBudget } from "../../controller/discovery/consul/connection-budget.js";
import { renewRetryMs } from "../../controller/leadership/leadership-state.js";

const http = (status: number, body: string, retryAfter: number | null = null) => new ConsulHttpError("web", status, body, undefined, retryAfter);
const policy = { backoff: (failures: number) => 100 * 2 ** (failures - 1), configurationRetryMs: 60_000 };

describe("what a failed Consul query means for the next one", () => {
  it("reads lasting errors as configuration problems, with what to fix", () => {
    expect(classifyFailure(http(403, "ACL not found"))).toMatchObject({ kind: "configuration", hint: expect.stringContaining("unknown to Consul") });
    expect(classifyFailure(http(403, "Permission denied: token with AccessorID 'x' lacks permission 'service:read' on \"pay\""))).toMatchObject({ kind: "configuration", hint: expect.stringContaining("lacks a permission") });
    expect(classifyFailure(http(500, "No path to datacenter"))).toMatchObject({ kind: "configuration", hint: "no such datacenter: check `dc`" });
    expect(classifyFailure(http(400, "Failed to create boolean expression evaluator"))).toMatchObject({ kind: "configuration" });
    expect(classifyFailure(new ConsulAnswerError("web", "body is over the 1024-byte limit (maxBodyBytes)"))).toMatchObject({ kind: "configuration" });
    expect(classifyFailure(new ConsulAnswerError("web", "results filtered by ACLs: ..."))).toMatchObject({ kind: "configuration" });
  });

  it("tells 429 (retry soon) from 503 (back off), keeps Retry-After, and takes the rest as transient", () => {
    expect(classifyFailure(http(429, "Your IP is issuing too many concurrent connections, please rate limit your calls\n", 2_000))).toEqual({ kind: "limited", retryAfterMs: 2_000, hint: null });
    expect(classifyFailure(http(503, "rate limit exceeded", 5_000))).toEqual({ kind: "overloaded", retryAfterMs: 5_000, hint: null });
    expect(classifyFailure(http(500, "rpc error making call: No cluster leader"))).toMatchObject({ kind: "transient" });
    expect(classifyFailure(new ConsulConnectError("http://c", "ECONNREFUSED"))).toMatchObject({ kind: "transient" });
    expect(classifyFailure(new ConsulIdleCutError("service 'web'", 60_000))).toMatchObject({ kind: "idle-cut" });
  });

  it("waits accordingly: none after an idle cut, slowly after a configuration problem, Retry-After when said", () => {
    expect(retryDelay(classifyFailure(new ConsulIdleCutError("s", 1)), 1, policy)).toBe(0);
    expect(retryDelay(classifyFailure(http(403, "ACL not found")), 1, policy)).toBe(60_000);
    expect(retryDelay(classifyFailure(http(429, "x")), 8, policy)).toBe(2_000);
    expect(retryDelay(classifyFailure(http(429, "x", 500)), 8, policy)).toBe(500);
    expect(retryDelay(classifyFailure(http(503, "x", 3_000)), 1, policy)).toBe(3_000);
    expect(retryDelay(classifyFailure(http(503, "x", 100)), 4, policy)).toBe(800);
    expect(retryAfterMs("7")).toBe(7_000);
    expect(retryAfterMs(new Date(10_000).toUTCString(), 4_000)).toBe(6_000);
    expect(retryAfterMs("soon")).toBeNull();
  });

  it("honours Retry-After on a session renewal only within half of what is left of the lease", () => {
    const none = () => 0;
    expect(renewRetryMs({ kind: "overloaded", retryAfterMs: 1_000 }, 1, 4_000, 1_600, none)).toBe(800);
    expect(renewRetryMs({ kind: "overloaded", retryAfterMs: 500 }, 1, 4_000, 10_000, none)).toBe(500);
    expect(renewRetryMs({ kind: "transient", retryAfterMs: null }, 1, 4_000, 1_600, none)).toBe(100);
  });

  it("shares connections past the budget by shortening each blocking wait, and says so", () => {
    expect(planBudget(10, 150, 60_000)).toEqual({ watches: 10, slots: 150, shared: false, waitMs: 60_000 });
    expect(planBudget(300, 150, 60_000)).toEqual({ watches: 300, slots: 150, shared: true, waitMs: 30_000 });
    expect(planBudget(100_000, 150, 60_000).waitMs).toBe(1_000);
    expect(describeBudget(planBudget(10, 150, 60_000), true)).toBe("10 Consul watches need 10 connections + up to 6 for the leadership and the replicas' shared status; within the budget of 150 (consul.maxConnections)");
  });
});
