import { ConsulHttpError, ConsulIdleCutError } from "./consul-client.js";
import { ConsulAnswerError } from "./consul-response.js";

/*
 * What a failed query means for the next one: pure, so each rule is tested on its own.
 * Consul's own texts are matched (acl/errors.go, agent/consul/rpc.go "No path to datacenter",
 * agent/consul/rate "rate limit exceeded", the connection limiter's 429).
 */

export type FailureKind =
  /** Retrying soon would fail the same way: an operator must change the token, the `dc`, the limit. */
  | "configuration"
  /** 429: Consul refused this request (rate limit, too many connections): try again soon. */
  | "limited"
  /** 503: Consul is overloaded (or has no leader): back off. */
  | "overloaded"
  /** A proxy cut an idle blocking query: no failure at all. */
  | "idle-cut"
  /** 5xx, timeouts, refused connections, bad answers: back off as usual. */
  | "transient";

export interface Failure {
  kind: FailureKind;
  /** Consul's `Retry-After`, when it sent one. */
  retryAfterMs: number | null;
  /** For a configuration problem: what to fix, in a few words. */
  hint: string | null;
}

export function classifyFailure(error: unknown): Failure {
  if (error instanceof ConsulIdleCutError) return { kind: "idle-cut", retryAfterMs: null, hint: null };
  if (error instanceof ConsulHttpError) {
    const body = error.bodyStart;
    if (error.status === 403) {
      const hint = /ACL not found/i.test(body) ? "the token is unknown to Consul (revoked, expired, or of another cluster)" : "the token lacks a permission this query needs";
      return { kind: "configuration", retryAfterMs: null, hint };
    }
    if (/No path to datacenter/i.test(body)) return { kind: "configuration", retryAfterMs: null, hint: "no such datacenter: check `dc`" };
    if (error.status === 400) return { kind: "configuration", retryAfterMs: null, hint: "Consul refused the query (a filter, namespace, partition or peer it does not accept)" };
    if (error.status === 429) return { kind: "limited", retryAfterMs: error.retryAfterMs, hint: null };
    if (error.status === 503) return { kind: "overloaded", retryAfterMs: error.retryAfterMs, hint: null };
    return { kind: "transient", retryAfterMs: error.retryAfterMs, hint: null };
  }
  if (error instanceof ConsulAnswerError) {
    if (/over the [0-9]+-byte limit/.test(error.detail)) return { kind: "configuration", retryAfterMs: null, hint: "the answer is over maxBodyBytes: raise it, or narrow the service with tags or a filter" };
    if (/filtered by ACLs/.test(error.detail)) return { kind: "configuration", retryAfterMs: null, hint: "the token lacks service:read or node:read on some instances" };
  }
  return { kind: "transient", retryAfterMs: null, hint: null };
}

export interface RetryPolicy {
  /** Exponential backoff after the `failures`-th failure in a row (jittered). */
  backoff(failures: number): number;
  /** How long a configuration problem waits before the next try. */
  configurationRetryMs: number;
}

/** The delay before the next query after a failure. */
export function retryDelay(failure: Failure, failures: number, policy: RetryPolicy): number {
  switch (failure.kind) {
    case "idle-cut":
      return 0;
    case "configuration":
      return policy.configurationRetryMs;
    case "limited":
      // Another try soon: the limit is on this request, not on Consul's health.
      return failure.retryAfterMs ?? Math.min(policy.backoff(failures), 2_000);
    case "overloaded":
      return Math.max(failure.retryAfterMs ?? 0, policy.backoff(failures));
    case "transient":
      return Math.max(failure.retryAfterMs ?? 0, policy.backoff(failures));
  }
}
