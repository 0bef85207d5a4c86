/*
 * What the demo does to the catalog, step by step: plain data, so that the full run and
 * `--short` differ only here. Upstreams are numbered from 0; the driver owns their ports.
 */

export const UPSTREAMS = 6;

/** Not an address at all: an attempt to smuggle a Runtime API command through discovery. */
export const HOSTILE_ADDRESS = "10.0.0.1;shutdown sessions";

export type Step =
  /** The catalog lists these upstreams; HAProxy must come to serve exactly them. */
  | { kind: "scale"; title: string; why: string; upstreams: number[] }
  /** The same, with one hostile entry besides, which must never reach HAProxy. */
  | { kind: "hostile"; title: string; why: string; upstreams: number[] }
  /** Discovery answers nothing for the service: the controller must hold, HAProxy keep serving. */
  | { kind: "guard"; title: string; why: string };

const start: Step = {
  kind: "scale",
  title: "start: the catalog lists 3 servers",
  why: "the agent fills 3 of the 4 server-template slots: set server addr, then state ready",
  upstreams: [0, 1, 2],
};
const upTo6: Step = {
  kind: "scale",
  title: "scale up 3 -> 6, past the 4 slots",
  why: "the last slot is filled and 2 servers are added at runtime (add server, enable health)",
  upstreams: [0, 1, 2, 3, 4, 5],
};
const downTo2: Step = {
  kind: "scale",
  title: "scale down 6 -> 2",
  why: "the 4 servers leaving drain, then go to maintenance, and the 2 added ones are deleted; a drop of 67% in one step, which this demo's guard allows (maxDropShare 0.7)",
  upstreams: [0, 1],
};
const guard: Step = {
  kind: "guard",
  title: "discovery empties the service",
  why: "an empty answer would take every server out: the controller holds the last good set, HAProxy keeps serving; then the catalog is restored",
};

export function scenario(short: boolean): Step[] {
  if (short) {
    return [
      start,
      upTo6,
      downTo2,
      { kind: "hostile", title: "a hostile catalog entry, while scaling 2 -> 3", why: "the controller drops the entry with its reason; the valid ones apply", upstreams: [0, 1, 2] },
      guard,
    ];
  }
  return [
    start,
    upTo6,
    downTo2,
    { kind: "scale", title: "scale up 2 -> 5", why: "the 2 slots freed in the step before serve again, and 1 server is added", upstreams: [0, 1, 2, 3, 4] },
    { kind: "scale", title: "scale down 5 -> 3, another mix", why: "not the last ones of the list: any servers may leave, slots or added ones, and the others stay as they are", upstreams: [1, 3, 4] },
    { kind: "hostile", title: "a hostile catalog entry, while scaling 3 -> 4", why: "the controller drops the entry with its reason; the valid ones apply", upstreams: [1, 3, 4, 5] },
    guard,
  ];
}
