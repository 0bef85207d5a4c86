import { z } from "zod";
import { ConsulHttpError, ConsulReplyError, retryAfterMs, type ConsulCall, type ConsulClient, type ConsulReply } from "../discovery/consul/consul-client.js";
import { ConsulAnswerError, parseConsulIndex, preview } from "../discovery/consul/consul-response.js";

/*
 * Consul's session and KV endpoints as the leadership uses them
 * (https://developer.hashicorp.com/consul/api-docs/session, .../api-docs/kv): requests
 * built here, answers read as untrusted input. No timing: the shell decides when to call.
 */

export interface SessionSpec {
  name: string;
  ttlMs: number;
  lockDelayMs: number;
  /**
   * The node checks the session is bound to; empty: none, the TTL alone. Consul's default is
   * `serfHealth` of the node the request lands on: behind a load-balanced address, an unrelated
   * node's gossip health would end the leadership.
   */
  nodeChecks: readonly string[];
}

/** The key as one read saw it; `entry` null when the key does not exist. */
export interface KeyAnswer {
  index: number;
  entry: { session: string | null; value: string | null; modifyIndex: number } | null;
}

const createdSchema = z.looseObject({ ID: z.string().min(1) });
// Go writes a nil []byte as null, and leaves Session out when the key is not held.
const treeSchema = z.array(
  z.looseObject({
    Key: z.string(),
    Value: z.string().nullable(),
    Session: z.string().optional(),
    ModifyIndex: z.number().int().nonnegative(),
  }),
);
const entriesSchema = treeSchema.length(1, "must hold exactly the one key asked for");

/** The keys under a prefix as one recursive read saw them. */
export interface TreeAnswer {
  index: number;
  entries: Array<{ key: string; session: string | null; value: string | null; modifyIndex: number }>;
}
const verdictSchema = z.boolean();

/** A duration as Consul parses it: whole seconds when they are, milliseconds otherwise. */
export function goDuration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/** The key's path under /v1/kv/: each segment escaped, the slashes kept. */
export function kvPath(key: string): string {
  return `kv/${key.split("/").map(encodeURIComponent).join("/")}`;
}

export function readKeyAnswer(reply: ConsulReply, key: string): KeyAnswer {
  const subject = `key '${key}'`;
  if (reply.status !== 200 && reply.status !== 404) throw new ConsulHttpError(key, reply.status, reply.body, subject);
  const index = indexOf(reply, subject);
  if (reply.status === 404) return { index, entry: null };
  const [entry] = parseReply(entriesSchema, reply.body, subject);
  return { index, entry: { session: entry!.Session ?? null, value: entry!.Value, modifyIndex: entry!.ModifyIndex } };
}

export class ConsulLockApi {
  /** `waitMs`: how long Consul holds a read of the key; the client's own timeout must be set for the same wait. */
  constructor(
    private readonly client: ConsulClient,
    private readonly key: string,
    private readonly waitMs: number,
  ) {}

  async createSession(spec: SessionSpec, timeoutMs: number, signal: AbortSignal): Promise<string> {
    const body = JSON.stringify({ Name: spec.name, TTL: goDuration(spec.ttlMs), LockDelay: goDuration(spec.lockDelayMs), Behavior: "release", NodeChecks: spec.nodeChecks });
    const reply = await this.send({ method: "PUT", path: "session/create", body, subject: "a new session", timeoutMs }, signal);
    return parseReply(createdSchema, reply.body, "a new session").ID;
  }

  /** "gone": Consul no longer knows the session (expired, destroyed, or never created there). */
  async renewSession(id: string, timeoutMs: number, signal: AbortSignal): Promise<"renewed" | "gone"> {
    const call: ConsulCall = { method: "PUT", path: `session/renew/${encodeURIComponent(id)}`, subject: `renewal of session '${id}'`, timeoutMs };
    const reply = await this.client.call(call, signal);
    if (reply.status === 404) return "gone";
    if (reply.status !== 200) throw new ConsulHttpError(id, reply.status, reply.body, call.subject, retryAfterMs(reply.headers["retry-after"]));
    return "renewed";
  }

  /**
   * PUT ?release: the key is freed now, with no lock-delay (Consul starts one only when a
   * session is invalidated), so the next leader need not wait it out. False: not ours any more.
   */
  async release(sessionId: string, value: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    const subject = `release of key '${this.key}'`;
    // Consul writes the body as the key's value on a release too: the data is sent again, or it would be lost.
    const reply = await this.send({ method: "PUT", path: kvPath(this.key), query: { release: sessionId }, body: value, subject, timeoutMs }, signal);
    return parseReply(verdictSchema, reply.body, subject);
  }

  async destroySession(id: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    await this.send({ method: "PUT", path: `session/destroy/${encodeURIComponent(id)}`, subject: `destruction of session '${id}'`, timeoutMs }, signal);
  }

  /** Blocks until the key changes past `index` or the wait runs out; 0 answers at once. */
  async readKey(index: number, signal: AbortSignal): Promise<KeyAnswer> {
    // Without an index Consul answers at once: `wait` would mean nothing.
    const query: Record<string, string> = index > 0 ? { index: String(index), wait: `${Math.ceil(this.waitMs)}ms` } : {};
    const reply = await this.client.call({ method: "GET", path: kvPath(this.key), query, subject: `key '${this.key}'` }, signal);
    return readKeyAnswer(reply, this.key);
  }

  /** Blocks until a key under `<key>/` changes past `index` or the wait runs out (`?recurse`); 0 answers at once. */
  async readTree(index: number, signal: AbortSignal): Promise<TreeAnswer> {
    const subject = `keys under '${this.key}/'`;
    const query: Record<string, string> = index > 0 ? { recurse: "", index: String(index), wait: `${Math.ceil(this.waitMs)}ms` } : { recurse: "" };
    const reply = await this.client.call({ method: "GET", path: `${kvPath(this.key)}/`, query, subject }, signal);
    if (reply.status !== 200 && reply.status !== 404) throw new ConsulHttpError(this.key, reply.status, reply.body, subject);
    const at = indexOf(reply, subject);
    if (reply.status === 404) return { index: at, entries: [] };
    const entries = parseReply(treeSchema, reply.body, subject).map((entry) => ({ key: entry.Key, session: entry.Session || null, value: entry.Value, modifyIndex: entry.ModifyIndex }));
    return { index: at, entries };
  }

  /** PUT with no lock: the key now holds `value`. */
  async put(value: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const subject = `write of key '${this.key}'`;
    const reply = await this.send({ method: "PUT", path: kvPath(this.key), body: value, subject, timeoutMs }, signal);
    if (!parseReply(verdictSchema, reply.body, subject)) throw new ConsulReplyError(subject, "Consul answered false");
  }

  async remove(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    await this.send({ method: "DELETE", path: kvPath(this.key), subject: `deletion of key '${this.key}'`, timeoutMs }, signal);
  }

  /** PUT ?acquire: true when the session holds the key and it now holds `value`; false when Consul refused. */
  async acquire(sessionId: string, value: string, timeoutMs: number, signal: AbortSignal): Promise<boolean> {
    const subject = `lock of key '${this.key}'`;
    const reply = await this.send({ method: "PUT", path: kvPath(this.key), query: { acquire: sessionId }, body: value, subject, timeoutMs }, signal);
    return parseReply(verdictSchema, reply.body, subject);
  }

  private async send(call: ConsulCall, signal: AbortSignal | undefined): Promise<ConsulReply> {
    const reply = await this.client.call(call, signal);
    if (reply.status !== 200) throw new ConsulHttpError(call.subject, reply.status, reply.body, call.subject, retryAfterMs(reply.headers["retry-after"]));
    return reply;
  }
}

function indexOf(reply: ConsulReply, subject: string): number {
  try {
    return parseConsulIndex(reply.headers["x-consul-index"], subject);
  } catch (error) {
    throw error instanceof ConsulAnswerError ? new ConsulReplyError(subject, error.detail) : error;
  }
}

function parseReply<S extends z.ZodType>(schema: S, body: string, subject: string): z.output<S> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch (error) {
    throw new ConsulReplyError(subject, `not valid JSON (${(error as Error).message}): ${preview(body)}`);
  }
  const checked = schema.safeParse(parsed);
  if (!checked.success) throw new ConsulReplyError(subject, `${checked.error.issues.map((issue) => `${issue.path.join(".") || "answer"}: ${issue.message}`).join("; ")}: ${preview(body)}`);
  return checked.data;
}
