import { HafleetError } from "../../agent/errors.js";
import type { Replica } from "./leader-value.js";

/** publish() on a replica that does not lead: only the leader writes the key. */
export class NotLeaderError extends HafleetError {
  readonly code = "HAFLEET_NOT_LEADER";
  constructor(
    readonly key: string,
    readonly leader: Replica | null,
  ) {
    const who = leader === null ? "no leader is known" : `the leader is '${leader.id}'${leader.url === undefined ? "" : ` (${leader.url})`}`;
    super(`this replica does not lead on Consul key '${key}': ${who}; only the leader publishes`);
    this.name = "NotLeaderError";
  }
}

/** Consul refused the leader's write: another session holds the key now. Nothing was written. */
export class LeadershipLostError extends HafleetError {
  readonly code = "HAFLEET_LEADERSHIP_LOST";
  constructor(readonly key: string) {
    super(`lost the lock on Consul key '${key}': Consul refused the write, this replica now follows; nothing was published`);
    this.name = "LeadershipLostError";
  }
}
