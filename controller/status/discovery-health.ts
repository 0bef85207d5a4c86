import type { DiscoveryHealth } from "./status-schema.js";

/**
 * Discovery's health per watched service (service or service#tag), from what the sources tell:
 * an answer (ok since then), a failure (failing since the first in a row, with the last error).
 * A service neither answered nor failed yet is never-answered. Held answers (the guard) are
 * the desired store's to say; the status builder puts the two together per backend.
 */
export class DiscoveryHealthTracker {
  private readonly byKey = new Map<string, DiscoveryHealth & { answered: boolean }>();

  /**
   * @param backendsOf each watched key's backends (one key may feed several).
   */
  constructor(private readonly backendsOf: ReadonlyMap<string, readonly string[]>) {}

  answered(key: string, now: number): void {
    const current = this.byKey.get(key);
    if (current?.state === "ok") return;
    this.byKey.set(key, { state: "ok", since: now, error: null, answered: true });
  }

  failed(key: string, error: string, now: number): void {
    const current = this.byKey.get(key);
    const answered = current?.answered ?? false;
    const detail = answered ? error : `${error} (never answered since the controller started)`;
    this.byKey.set(key, { state: "failing", since: current?.state === "failing" ? current.since : now, error: detail, answered });
  }

  /** Per backend: ok, failing or never-answered (held is added by the status builder). */
  health(): Map<string, DiscoveryHealth> {
    const health = new Map<string, DiscoveryHealth>();
    for (const [key, backends] of this.backendsOf) {
      const entry = this.byKey.get(key);
      const value: DiscoveryHealth = entry === undefined ? { state: "never-answered", since: null, error: null } : { state: entry.state, since: entry.since, error: entry.error };
      for (const backend of backends) health.set(backend, value);
    }
    return health;
  }
}
