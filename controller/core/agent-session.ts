import type { Name } from "../../agent/model/values.js";
import type { BackendResult, DesiredPush, Hello, PushResponse } from "../../proto/messages.js";
import type { DesiredBackendState } from "./desired-store.js";
import { setVersion } from "./versions.js";

export type BackendSync =
  | { state: "synced"; version: string }
  | { state: "pending"; version: string; since: number }
  | { state: "rejected"; version: string; error: string; appliedVersion: string }
  | { state: "not-sent"; version: string };

interface InFlight {
  nonce: string;
  backends: Map<Name, string>;
  removed: Name[];
  sentAt: number;
}

export interface ResponseOutcome {
  acked: Array<{ backend: string; version: string }>;
  nacked: Array<{ backend: string; version: string; error: string }>;
  /** From push to response. */
  latencyMs: number;
}

const setVersions = new WeakMap<readonly DesiredBackendState[], string>();

/** The store hands agents with the same labels the same array: its digest is computed once. */
function versionOf(desired: readonly DesiredBackendState[]): string {
  let version = setVersions.get(desired);
  if (version === undefined) {
    version = setVersion(new Map(desired.map((backend) => [backend.name, backend.version])));
    setVersions.set(desired, version);
  }
  return version;
}

/**
 * What one agent has, what is in flight to it, and what it refused. Pure: no gRPC, no clock
 * of its own. At most one push is in flight; later changes wait and merge (latest wins),
 * since the next push is computed from the desired state at the time the response arrives.
 * A nacked version is not sent again: the agent is held until that backend's version changes.
 */
const NOTHING_KEPT: ReadonlySet<string> = new Set();

export class AgentSession {
  private readonly acked = new Map<Name, string>();
  private readonly nacked = new Map<Name, { version: string; error: string; appliedVersion: string }>();
  /** Backends the agent manages without having applied any version: removable all the same. */
  private readonly unapplied = new Set<Name>();
  private inFlight: InFlight | null = null;
  private pushes = 0;

  constructor(
    readonly hello: Hello,
    /** Makes nonces unique to the stream: a response from an earlier stream never matches. */
    private readonly streamId: string,
  ) {
    // Keys were checked with nameSchema on receipt; Object.entries only loses the brand.
    for (const [backend, version] of Object.entries(hello.appliedVersions)) {
      if (version === "") this.unapplied.add(backend as Name);
      else this.acked.set(backend as Name, version);
    }
  }

  get agentId(): string {
    return this.hello.agentId;
  }

  get busy(): boolean {
    return this.inFlight !== null;
  }

  /** The next push, or null when the agent has everything (or a push is in flight). */
  /** `keep`: backends mapped to the agent but not published yet (discovery has not answered): never removed. */
  nextPush(desired: readonly DesiredBackendState[], now: number, keep: ReadonlySet<string> = NOTHING_KEPT): DesiredPush | null {
    if (this.inFlight) return null;
    const wanted = new Set<Name>([...desired.map((backend) => backend.name), ...([...keep] as Name[])]);
    const changed = desired.filter((backend) => this.holds(backend.name) !== backend.version);
    const removed = [...new Set([...this.acked.keys(), ...this.nacked.keys(), ...this.unapplied])].filter((name) => !wanted.has(name));
    if (changed.length === 0 && removed.length === 0) return null;

    const nonce = `${this.streamId}-${++this.pushes}`;
    this.inFlight = { nonce, backends: new Map(changed.map((backend) => [backend.name, backend.version])), removed, sentAt: now };
    return {
      nonce,
      version: versionOf(desired),
      backends: changed.map((backend) => ({ name: backend.name, version: backend.version, servers: backend.servers, allowEmpty: backend.allowEmpty })),
      removedBackends: removed,
    };
  }

  /** Applies an ack/nack; a response with a nonce that is not the one in flight is ignored. */
  onResponse(response: PushResponse, now: number): ResponseOutcome | null {
    const inFlight = this.inFlight;
    if (!inFlight || response.nonce !== inFlight.nonce) return null;
    this.inFlight = null;
    const outcome: ResponseOutcome = { acked: [], nacked: [], latencyMs: now - inFlight.sentAt };
    const results = new Map<Name, BackendResult>(response.results.map((result) => [result.backend, result]));
    for (const [backend, version] of inFlight.backends) {
      const result = results.get(backend);
      const error = result === undefined ? "the agent sent no result for this backend" : result.version !== version ? `the agent answered for version ${result.version}` : result.error;
      if (error === "") {
        this.acked.set(backend, version);
        this.nacked.delete(backend);
        outcome.acked.push({ backend, version });
      } else {
        const appliedVersion = result?.appliedVersion ?? "";
        this.nacked.set(backend, { version, error, appliedVersion });
        if (appliedVersion === "") this.acked.delete(backend);
        else this.acked.set(backend, appliedVersion);
        outcome.nacked.push({ backend, version, error });
      }
    }
    for (const backend of inFlight.removed) {
      this.acked.delete(backend);
      this.nacked.delete(backend);
      this.unapplied.delete(backend);
    }
    return outcome;
  }

  /**
   * The versions the agent reports it applied since (its observed report): a push it nacked,
   * e.g. because HAProxy was down, and applied on its own once HAProxy was back, is acked by
   * this. Returns the backends so acked; one with a push in flight waits for that response.
   */
  onObserved(applied: Readonly<Record<string, string>>): Array<{ backend: Name; version: string }> {
    const recovered: Array<{ backend: Name; version: string }> = [];
    for (const [backend, nack] of this.nacked) {
      if (applied[backend] !== nack.version || this.inFlight?.backends.has(backend)) continue;
      this.nacked.delete(backend);
      this.acked.set(backend, nack.version);
      recovered.push({ backend, version: nack.version });
    }
    return recovered;
  }

  /** The version the agent last acked, per backend. */
  appliedVersions(): Map<Name, string> {
    return new Map(this.acked);
  }

  /** The agent's last nack of this backend, whatever the version wanted now; undefined if none stands. */
  rejection(backend: string): { version: string; error: string } | undefined {
    const nack = this.nacked.get(backend as Name);
    return nack === undefined ? undefined : { version: nack.version, error: nack.error };
  }

  /**
   * The version the agent keeps as its desired state: the one it nacked, if any (it stores a
   * push it could not apply, and retries it), else the one it acked. A nacked version is not
   * sent again; a rollback to the acked one is, so that the agent stops retrying the other.
   */
  private holds(backend: Name): string | undefined {
    return this.nacked.get(backend)?.version ?? this.acked.get(backend);
  }

  /** Per desired backend: synced, pending (in flight), rejected (nacked), or not sent yet. */
  sync(desired: readonly DesiredBackendState[]): Map<Name, BackendSync> {
    const status = new Map<Name, BackendSync>();
    for (const backend of desired) {
      const { name, version } = backend;
      const nack = this.nacked.get(name);
      if (this.holds(name) === version && this.acked.get(name) === version) status.set(name, { state: "synced", version });
      else if (this.inFlight?.backends.get(name) === version) status.set(name, { state: "pending", version, since: this.inFlight.sentAt });
      else if (nack?.version === version) status.set(name, { state: "rejected", version, error: nack.error, appliedVersion: nack.appliedVersion });
      else status.set(name, { state: "not-sent", version });
    }
    return status;
  }
}
