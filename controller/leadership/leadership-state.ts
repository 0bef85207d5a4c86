import { backoffDelay } from "../discovery/consul/consul-watch.js";
import type { Replica } from "./leader-value.js";

/*
 * Who leads and what to do next, from what Consul answered and the time: no I/O, the clock
 * passed in. The shell around it sends the requests and feeds the answers back.
 *
 * Safety rests on one rule: a replica leads only while its session holds the key AND Consul
 * cannot yet have expired that session. Consul never expires a session sooner than its TTL
 * after the last renewal it received, which came after we sent it; so the lease runs from
 * when the last successful create or renew was SENT, and ends a tenth of the TTL early, for
 * clocks that do not run at the same rate here and on Consul's leader.
 */

export interface SessionLease {
  id: string;
  /** When the request that last proved the session alive (its create or a renew) was sent. */
  confirmedAt: number;
}

/** The key as last read (or as our own successful acquire left it). */
export interface KeyState<T> {
  /** The session holding the lock, null when free. */
  holder: string | null;
  leader: Replica | null;
  data: T | null;
}

export interface LeadershipState<T> {
  session: SessionLease | null;
  /** null until the key was first read: nothing is acquired before the data it holds is known. */
  key: KeyState<T> | null;
  /** No acquire before this time: Consul refused the last one (a lock-delay, or a holder we do not see yet). */
  acquireNotBefore: number;
}

export interface LeadershipView<T> {
  leading: boolean;
  leader: Replica | null;
  data: T | null;
}

export interface Timing {
  sessionTtlMs: number;
  lockDelayMs: number;
}

export function initialState<T>(): LeadershipState<T> {
  return { session: null, key: null, acquireNotBefore: 0 };
}

export function fenceMarginMs(sessionTtlMs: number): number {
  return Math.ceil(sessionTtlMs / 10);
}

/** The last moment this replica may believe its session alive. */
export function leaseEnd(lease: SessionLease, sessionTtlMs: number): number {
  return lease.confirmedAt + sessionTtlMs - fenceMarginMs(sessionTtlMs);
}

export function isLeading<T>(state: LeadershipState<T>, sessionTtlMs: number, now: number): boolean {
  const { session, key } = state;
  return session !== null && key !== null && key.holder === session.id && now < leaseEnd(session, sessionTtlMs);
}

/**
 * The leader is `self` while leading, else whoever's session holds the key, as its value
 * names it; our own session past its lease names nobody, since Consul may already have
 * handed the key to another.
 */
export function viewOf<T>(state: LeadershipState<T>, self: Replica, sessionTtlMs: number, now: number): LeadershipView<T> {
  const { key } = state;
  const leading = isLeading(state, sessionTtlMs, now);
  const ownButFenced = !leading && key !== null && state.session !== null && key.holder === state.session.id;
  const leader = leading ? self : key === null || key.holder === null || ownButFenced ? null : key.leader;
  return { leading, leader, data: key?.data ?? null };
}

export function sameView<T>(a: LeadershipView<T>, b: LeadershipView<T>): boolean {
  return a.leading === b.leading && JSON.stringify(a.leader) === JSON.stringify(b.leader) && JSON.stringify(a.data) === JSON.stringify(b.data);
}

/** Try for the lock now: a live session, the key read and free, and no refusal still standing. */
export function shouldAcquire<T>(state: LeadershipState<T>, now: number): boolean {
  return state.session !== null && state.key !== null && state.key.holder === null && now >= state.acquireNotBefore;
}

/** Renewals at half the TTL leave the other half for retries before the lease ends. */
export function renewDueAt(lease: SessionLease, sessionTtlMs: number): number {
  return lease.confirmedAt + sessionTtlMs / 2;
}

/** After `failures` failed requests in a row: quick at first, never more than a quarter TTL apart. */
export function retryDelayMs(failures: number, sessionTtlMs: number, random: () => number): number {
  return backoffDelay(failures, { initialMs: Math.max(1, sessionTtlMs / 20), maxMs: sessionTtlMs / 4 }, random);
}

/**
 * When to try a failed renewal again. Consul's `Retry-After` (429, 503 from its rate limits)
 * is honoured, but never past half of what is left of the lease: a retry that succeeds
 * within the TTL keeps the leadership, and one that waited past it would have lost it.
 */
export function renewRetryMs(failure: { kind: string; retryAfterMs: number | null }, failures: number, sessionTtlMs: number, leaseLeftMs: number, random: () => number): number {
  const backoff = retryDelayMs(failures, sessionTtlMs, random);
  if (failure.retryAfterMs === null) return backoff;
  const asked = failure.kind === "limited" ? failure.retryAfterMs : Math.max(backoff, failure.retryAfterMs);
  return Math.max(0, Math.min(asked, Math.floor(leaseLeftMs / 2)));
}

/**
 * How long to wait after Consul refused an acquire on a key that looked free: Consul tells
 * nobody when a lock-delay ends, so it is polled, a few times per lock-delay, at most every
 * 5 s as Consul's own lock helper does.
 */
export function acquireRetryMs(timing: Timing): number {
  return Math.min(5_000, Math.max(100, timing.lockDelayMs / 4));
}

/** How long one request other than the key's blocking read may take: a renewal must fit in its half TTL. */
export function requestTimeoutMs(sessionTtlMs: number): number {
  return Math.max(100, Math.floor(sessionTtlMs / 3));
}

// ---- Transitions: what each answer does to the state ----

export function sessionConfirmed<T>(state: LeadershipState<T>, id: string, sentAt: number): LeadershipState<T> {
  return { ...state, session: { id, confirmedAt: sentAt } };
}

/** Consul no longer knows the session (expired, destroyed): it holds nothing any more. */
export function sessionLost<T>(state: LeadershipState<T>): LeadershipState<T> {
  const { session, key } = state;
  const heldIt = session !== null && key !== null && key.holder === session.id;
  return { ...state, session: null, key: heldIt ? { ...key, holder: null, leader: null } : key };
}

export function keyRead<T>(state: LeadershipState<T>, key: KeyState<T>): LeadershipState<T> {
  return { ...state, key };
}

/** Consul said true to our acquire: the key holds what we sent, under our session. */
export function acquired<T>(state: LeadershipState<T>, sessionId: string, self: Replica, data: T | null): LeadershipState<T> {
  if (state.session?.id !== sessionId) return state;
  return { ...state, key: { holder: sessionId, leader: self, data } };
}

/** The acquire failed or was refused: not again before the retry time. */
export function acquireDeferred<T>(state: LeadershipState<T>, now: number, timing: Timing): LeadershipState<T> {
  return { ...state, acquireNotBefore: now + acquireRetryMs(timing) };
}

/**
 * Consul said false. If we believed we held the key, someone else holds it now (or it was
 * deleted and is in a lock-delay): we lead no more, and which other holds it, the next read says.
 */
export function acquireRefused<T>(state: LeadershipState<T>, sessionId: string, now: number, timing: Timing): LeadershipState<T> {
  const key = state.key !== null && state.key.holder === sessionId ? { ...state.key, holder: null, leader: null } : state.key;
  return acquireDeferred({ ...state, key }, now, timing);
}
