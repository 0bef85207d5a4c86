import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ReplyParseError } from "../../agent/errors.js";
import { describeWorkerChange, isAtLeast, parseWorker, workerChange } from "../../agent/runtime/worker.js";

const INFO = readFileSync(new URL("../fixtures/haproxy-2.6/show-info.txt", import.meta.url), "utf8");

describe("the serving worker, from show info", () => {
  it("reads the pid, the version and whether it is an old worker that is stopping", () => {
    expect(parseWorker(INFO)).toMatchObject({ pid: 3456, stopping: false });
    expect(parseWorker(INFO.replace("Stopping: 0", "Stopping: 1")).stopping).toBe(true);
  });

  it("refuses a reply that cannot say whether the process is stopping", () => {
    expect(() => parseWorker(INFO.replace("Stopping: 0\n", ""))).toThrow(ReplyParseError);
    expect(() => parseWorker(INFO.replace("Stopping: 0", "Stopping: yes"))).toThrow(/Stopping/);
  });
});

describe("how the serving process changed", () => {
  const worker = (pid: number) => ({ pid, version: "2.6.12", stopping: false });

  it("says nothing the first time, or when the same process answers", () => {
    expect(workerChange(undefined, worker(1))).toBeNull();
    expect(workerChange(worker(1), worker(1))).toBeNull();
    expect(workerChange(null, null)).toBeNull();
  });

  it("tells a replaced process, one gone, and one back", () => {
    expect(workerChange(worker(1), worker(2))).toEqual({ kind: "replaced", from: 1, to: 2 });
    expect(workerChange(worker(1), null)).toEqual({ kind: "gone", from: 1 });
    expect(workerChange(null, worker(2))).toEqual({ kind: "back", to: 2 });
    expect(describeWorkerChange({ kind: "replaced", from: 1234, to: 1240 })).toBe("HAProxy reloaded or restarted (worker 1234 -> 1240)");
  });
});

describe("which HAProxy branch serves", () => {
  const worker = (version: string) => ({ pid: 1, version, stopping: false });

  it("compares MAJOR.MINOR, Debian's suffixes included, and says no when it cannot tell", () => {
    expect(isAtLeast(worker("3.0.11-1"), 3, 0)).toBe(true);
    expect(isAtLeast(worker("2.6.12-1+deb12u4"), 3, 0)).toBe(false);
    expect(isAtLeast(worker("3.4.7"), 3, 2)).toBe(true);
    expect(isAtLeast(worker("10.1"), 3, 0)).toBe(true);
    expect(isAtLeast(worker("dev"), 3, 0)).toBe(false);
    expect(isAtLeast(null, 3, 0)).toBe(false);
    expect(isAtLeast(undefined, 3, 0)).toBe(false);
  });
});
