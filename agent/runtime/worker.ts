import { ReplyParseError } from "../errors.js";
import { parseInfo } from "./parsers/info.js";

/**
 * Which HAProxy process answered a connection. A reload or restart puts a new process behind
 * the same socket path while connections opened before stay on the old one: the pid tells
 * them apart, and `Stopping: 1` marks a process that no longer owns its listeners.
 */
export interface WorkerIdentity {
  pid: number;
  version: string;
  /** An old worker after a reload: it serves only connections it already had. */
  stopping: boolean;
}

/** From a `show info` reply. `Stopping` is there in every version since 1.8; absent, it is refused. */
export function parseWorker(text: string): WorkerIdentity {
  const info = parseInfo(text);
  const stopping = info.fields["Stopping"];
  if (stopping !== "0" && stopping !== "1") throw new ReplyParseError("show info", `expected 'Stopping: 0' or 'Stopping: 1', got ${stopping === undefined ? "no Stopping line" : JSON.stringify(stopping.slice(0, 64))}`);
  return { pid: info.pid, version: info.version, stopping: stopping === "1" };
}

/** How the serving process changed between two looks, or null when it did not. */
export type WorkerChange =
  | { kind: "replaced"; from: number; to: number }
  | { kind: "back"; to: number }
  | { kind: "gone"; from: number };

/** `previous` undefined: never looked; null: could not be reached. */
export function workerChange(previous: WorkerIdentity | null | undefined, current: WorkerIdentity | null): WorkerChange | null {
  if (previous === undefined) return null;
  if (previous === null) return current === null ? null : { kind: "back", to: current.pid };
  if (current === null) return { kind: "gone", from: previous.pid };
  return current.pid === previous.pid ? null : { kind: "replaced", from: previous.pid, to: current.pid };
}

/** The operator's words for a change, as the agent reports and logs it. */
export function describeWorkerChange(change: WorkerChange): string {
  switch (change.kind) {
    case "replaced":
      return `HAProxy reloaded or restarted (worker ${change.from} -> ${change.to})`;
    case "back":
      return `HAProxy reachable again (worker ${change.to})`;
    case "gone":
      return `HAProxy unreachable (worker ${change.from} gone)`;
  }
}

/** `3.0.11-1` -> [3, 0]; null for a version text that does not start with MAJOR.MINOR. */
function branch(version: string): [number, number] | null {
  const match = /^(\d+)\.(\d+)/.exec(version);
  return match ? [Number(match[1]), Number(match[2])] : null;
}

/** Whether the serving HAProxy is at least MAJOR.MINOR; false when unknown: older behaviour is the safe guess. */
export function isAtLeast(worker: WorkerIdentity | null | undefined, major: number, minor: number): boolean {
  const found = worker ? branch(worker.version) : null;
  return found !== null && (found[0] > major || (found[0] === major && found[1] >= minor));
}
