import { mkdir, mkdtemp, rename, rm, symlink, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { InvalidInputError } from "../../agent/errors.js";
import { endpointKey } from "../../agent/model/values.js";
import { FileSource, parseCatalog, sameServers, snapshotOf } from "../../controller/discovery/file-source.js";
import type { ServiceSnapshot, SnapshotListener } from "../../controller/discovery/service-snapshot.js";

/*
 * The file source against a real directory: real fs.watch, real renames, real timers.
 * Every wait is bounded; "nothing happened" is asserted only after something that proves the
 * source did look at the file (another watch hearing of the same read), or after a period
 * longer than the debounce plus two polls.
 */

const WAIT_MS = 4000;
const POLL_MS = 100;
/** Longer than the debounce (50 ms) plus two polls: a change would have been seen by now. */
const QUIET_MS = 400;

type Event = { kind: "snapshot"; snapshot: ServiceSnapshot } | { kind: "error"; key: string; error: Error };

/** A listener that queues what it hears, for tests to take one event at a time. */
class Recorder implements SnapshotListener {
  readonly events: Event[] = [];
  private wake: (() => void) | null = null;

  snapshot(snapshot: ServiceSnapshot): void {
    this.push({ kind: "snapshot", snapshot });
  }

  error(key: string, error: Error): void {
    this.push({ kind: "error", key, error });
  }

  private push(event: Event): void {
    this.events.push(event);
    this.wake?.();
  }

  async next(): Promise<Event> {
    const deadline = Date.now() + WAIT_MS;
    while (this.events.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no event within ${WAIT_MS} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
    const event = this.events.shift();
    if (event === undefined) throw new Error("unreachable: queue emptied while waiting");
    return event;
  }

  async nextSnapshot(): Promise<ServiceSnapshot> {
    const event = await this.next();
    if (event.kind !== "snapshot") throw new Error(`expected a snapshot, got error for ${event.key}: ${event.error.message}`);
    return event.snapshot;
  }

  /**
   * The next snapshot, skipping errors: a file written in place can be read half-written,
   * which is an error the source reports and recovers from by itself.
   */
  async nextSnapshotSkippingErrors(): Promise<ServiceSnapshot> {
    for (;;) {
      const event = await this.next();
      if (event.kind === "snapshot") return event.snapshot;
    }
  }

  async nextError(): Promise<{ key: string; error: Error }> {
    const event = await this.next();
    if (event.kind !== "error") throw new Error(`expected an error, got a snapshot of ${event.snapshot.key}`);
    return event;
  }
}

function endpoints(snapshot: ServiceSnapshot): string[] {
  return snapshot.servers.map((server) => `${endpointKey(server.address, server.port)}${server.weight === undefined ? "" : `/${server.weight}`}`).sort();
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let dir = "";
let path = "";
const sources: FileSource[] = [];

function source(pollMs = POLL_MS): FileSource {
  const created = new FileSource(path, { pollMs });
  sources.push(created);
  return created;
}

/** Replaces the file the way editors and config tools do: a new file renamed over the old. */
async function replaceCatalog(content: unknown): Promise<void> {
  const temporary = join(dir, `.catalog-${Math.random().toString(36).slice(2)}.tmp`);
  await writeFile(temporary, typeof content === "string" ? content : JSON.stringify(content));
  await rename(temporary, path);
}

const CATALOG = {
  services: {
    web: [
      { address: "10.0.0.1", port: 8080 },
      { address: "10.0.0.2", port: 8080, weight: 50, tags: ["canary"] },
    ],
    api: [{ address: "2001:db8::10", port: 9000, tags: ["v2"] }],
  },
};

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "hafleet-file-source-"));
  path = join(dir, "catalog.json");
});

afterEach(async () => {
  await Promise.all(sources.splice(0).map((created) => created.close()));
  await rm(dir, { recursive: true, force: true });
});

describe("FileSource: snapshots", () => {
  it("gives the current snapshot of a watched service at once", async () => {
    await replaceCatalog(CATALOG);
    const web = new Recorder();
    source().watch("web", null, web);
    const snapshot = await web.nextSnapshot();
    expect(snapshot.key).toBe("web");
    expect(endpoints(snapshot)).toEqual(["10.0.0.1:8080", "10.0.0.2:8080/50"]);
    expect(snapshot.dropped).toEqual([]);
  });

  it("gives a later watcher the current snapshot too, and an absent service as empty", async () => {
    await replaceCatalog(CATALOG);
    const files = source();
    const first = new Recorder();
    files.watch("api", null, first);
    expect(endpoints(await first.nextSnapshot())).toEqual(["[2001:db8::10]:9000"]);

    const second = new Recorder();
    const absent = new Recorder();
    files.watch("api", null, second);
    files.watch("billing", null, absent);
    expect(endpoints(await second.nextSnapshot())).toEqual(["[2001:db8::10]:9000"]);
    expect(await absent.nextSnapshot()).toEqual({ key: "billing", servers: [], dropped: [] });
    // The first watcher is not told again of what it already knows.
    await sleep(QUIET_MS);
    expect(first.events).toEqual([]);
  });

  it("filters by tag", async () => {
    await replaceCatalog(CATALOG);
    const files = source();
    const canary = new Recorder();
    const v1 = new Recorder();
    files.watch("web", "canary", canary);
    files.watch("api", "v1", v1);
    const snapshot = await canary.nextSnapshot();
    expect(snapshot.key).toBe("web#canary");
    expect(endpoints(snapshot)).toEqual(["10.0.0.2:8080/50"]);
    expect(await v1.nextSnapshot()).toEqual({ key: "api#v1", servers: [], dropped: [] });

    // The tag moves to the other instance: the tagged watch follows it.
    await replaceCatalog({ services: { web: [{ address: "10.0.0.1", port: 8080, tags: ["canary", "x"] }, { address: "10.0.0.2", port: 8080, weight: 50 }] } });
    expect(endpoints(await canary.nextSnapshot())).toEqual(["10.0.0.1:8080"]);
  });

  it("follows an edit made in place", async () => {
    await writeFile(path, JSON.stringify(CATALOG));
    const web = new Recorder();
    source().watch("web", null, web);
    await web.nextSnapshot();
    await writeFile(path, JSON.stringify({ services: { web: [{ address: "10.0.0.3", port: 8081, weight: 7 }] } }));
    expect(endpoints(await web.nextSnapshotSkippingErrors())).toEqual(["10.0.0.3:8081/7"]);
  });

  it("follows a file replaced by rename, again and again", async () => {
    await replaceCatalog(CATALOG);
    const web = new Recorder();
    source().watch("web", null, web);
    await web.nextSnapshot();
    for (let round = 1; round <= 3; round += 1) {
      await replaceCatalog({ services: { web: [{ address: `10.0.1.${round}`, port: 80 }] } });
      expect(endpoints(await web.nextSnapshot())).toEqual([`10.0.1.${round}:80`]);
    }
  });

  it("sees edits through the directory watch alone, without waiting for the poll", async () => {
    await replaceCatalog(CATALOG);
    const web = new Recorder();
    source(60_000).watch("web", null, web);
    await web.nextSnapshot();
    await replaceCatalog({ services: { web: [{ address: "10.0.2.1", port: 80 }] } });
    expect(endpoints(await web.nextSnapshot())).toEqual(["10.0.2.1:80"]);
    await writeFile(path, JSON.stringify({ services: { web: [{ address: "10.0.2.2", port: 80 }] } }));
    expect(endpoints(await web.nextSnapshotSkippingErrors())).toEqual(["10.0.2.2:80"]);
  });

  it("sees a swap of a linked directory, which the directory watch does not report, by polling", async () => {
    // The layout of a Kubernetes ConfigMap volume: catalog.json -> ..data/catalog.json, and
    // ..data, a link to a versioned directory, swapped by rename.
    for (const version of ["v1", "v2"]) await mkdir(join(dir, version));
    await writeFile(join(dir, "v1", "catalog.json"), JSON.stringify(CATALOG));
    await writeFile(join(dir, "v2", "catalog.json"), JSON.stringify({ services: { web: [{ address: "10.0.3.1", port: 80 }] } }));
    await symlink("v1", join(dir, "..data"));
    await symlink(join("..data", "catalog.json"), path);
    const web = new Recorder();
    source().watch("web", null, web);
    expect(endpoints(await web.nextSnapshot())).toEqual(["10.0.0.1:8080", "10.0.0.2:8080/50"]);
    await symlink("v2", join(dir, "..data_tmp"));
    await rename(join(dir, "..data_tmp"), join(dir, "..data"));
    expect(endpoints(await web.nextSnapshot())).toEqual(["10.0.3.1:80"]);
  });

  it("tells a watch only when its own server set changed, in any order", async () => {
    await replaceCatalog(CATALOG);
    const files = source();
    const web = new Recorder();
    const api = new Recorder();
    files.watch("web", null, web);
    files.watch("api", null, api);
    await web.nextSnapshot();
    await api.nextSnapshot();

    // web: same servers in another order, a tag added; api: a new instance.
    await replaceCatalog({
      services: {
        web: [
          { address: "10.0.0.2", port: 8080, weight: 50, tags: ["canary", "new"] },
          { address: "10.0.0.1", port: 8080 },
        ],
        api: [...CATALOG.services.api, { address: "2001:db8::11", port: 9000 }],
      },
    });
    expect(endpoints(await api.nextSnapshot())).toEqual(["[2001:db8::10]:9000", "[2001:db8::11]:9000"]);
    expect(web.events).toEqual([]);

    // A weight change is a change.
    await replaceCatalog({ services: { web: [{ address: "10.0.0.1", port: 8080 }, { address: "10.0.0.2", port: 8080, weight: 60 }], api: CATALOG.services.api } });
    expect(endpoints(await web.nextSnapshot())).toEqual(["10.0.0.1:8080", "10.0.0.2:8080/60"]);
    expect(endpoints(await api.nextSnapshot())).toEqual(["[2001:db8::10]:9000"]);
  });

  it("empties a service that leaves the file: the file says it has no instances", async () => {
    await replaceCatalog(CATALOG);
    const api = new Recorder();
    source().watch("api", null, api);
    await api.nextSnapshot();
    await replaceCatalog({ services: { web: CATALOG.services.web } });
    expect(await api.nextSnapshot()).toEqual({ key: "api", servers: [], dropped: [] });
  });

  it("drops hostile and malformed instances with their reasons, keeping the good ones", async () => {
    await replaceCatalog({
      services: {
        web: [
          { address: "10.0.0.1", port: 8080 },
          { address: "10.0.0.2;disable server be/s1", port: 8080 },
          { address: "10.0.0.3", port: 99999 },
          { address: "10.0.0.4", port: 8080, weight: 1000 },
          "10.0.0.5:8080",
          { address: "10.0.0.6", port: 8080, tags: "canary" },
          { address: "10.0.0.7", port: 8080, meta: {} },
          { address: "10.0.0.1", port: 8080 },
          { address: "10.0.0.8", port: "8080" },
          { address: "10.0.0.9", port: 8080, weight: 0 },
        ],
      },
    });
    const web = new Recorder();
    source().watch("web", null, web);
    const snapshot = await web.nextSnapshot();
    expect(endpoints(snapshot)).toEqual(["10.0.0.1:8080", "10.0.0.9:8080/0"]);
    const reasons = Object.fromEntries(snapshot.dropped.map((dropped) => [dropped.id, dropped.reason]));
    expect(Object.keys(reasons).sort()).toEqual(["web[1]", "web[2]", "web[3]", "web[4]", "web[5]", "web[6]", "web[7]", "web[8]"]);
    expect(reasons["web[1]"]).toMatch(/^address: must be an IPv4 or IPv6 literal/);
    expect(reasons["web[2]"]).toMatch(/^port: must be between 1 and 65535 \(got 99999\)/);
    expect(reasons["web[3]"]).toMatch(/^weight: must be between 0 and 256/);
    expect(reasons["web[4]"]).toMatch(/expected object/);
    expect(reasons["web[5]"]).toMatch(/^tags: /);
    expect(reasons["web[6]"]).toBe("unknown field(s) meta");
    expect(reasons["web[7]"]).toBe("duplicate of another instance at 10.0.0.1:8080");
    expect(reasons["web[8]"]).toMatch(/^port: must be a number/);
  });
});

describe("FileSource: a bad file never empties a service", () => {
  it.each<[string, string, RegExp]>([
    ["not JSON", '{"services": {"web": [', /not valid JSON/],
    ["the wrong shape", JSON.stringify({ services: [{ address: "10.0.0.9", port: 80 }] }), /services: /],
    ["an unknown top-level key", JSON.stringify({ services: {}, extra: 1 }), /unknown field\(s\) extra/],
    ["a service that is not a list", JSON.stringify({ services: { web: { address: "10.0.0.9", port: 80 } } }), /services\.web: /],
  ])("reports %s to every watch, keeps the last good snapshots, and recovers", async (_name, bad, message) => {
    await replaceCatalog(CATALOG);
    const files = source();
    const web = new Recorder();
    const canary = new Recorder();
    files.watch("web", null, web);
    files.watch("web", "canary", canary);
    await web.nextSnapshot();
    await canary.nextSnapshot();

    await replaceCatalog(bad);
    const failure = await web.nextError();
    expect(failure.key).toBe("web");
    expect(failure.error).toBeInstanceOf(InvalidInputError);
    expect(failure.error.message).toMatch(message);
    expect((await canary.nextError()).key).toBe("web#canary");

    // The same bad file seen again (by the poll) is not reported again, and nothing is emptied.
    await sleep(QUIET_MS);
    expect(web.events).toEqual([]);
    expect(canary.events).toEqual([]);

    // A late watcher hears the last good snapshot, and that the file is bad now.
    const late = new Recorder();
    files.watch("web", null, late);
    expect(endpoints(await late.nextSnapshot())).toEqual(["10.0.0.1:8080", "10.0.0.2:8080/50"]);
    expect((await late.nextError()).error.message).toMatch(message);

    await replaceCatalog({ services: { web: [{ address: "10.0.0.9", port: 80, tags: ["canary"] }] } });
    expect(endpoints(await web.nextSnapshot())).toEqual(["10.0.0.9:80"]);
    expect(endpoints(await canary.nextSnapshot())).toEqual(["10.0.0.9:80"]);
  });

  it("reports a missing file, keeps the last good snapshot, and picks the file up when it is back", async () => {
    await replaceCatalog(CATALOG);
    const web = new Recorder();
    source().watch("web", null, web);
    await web.nextSnapshot();
    await unlink(path);
    const failure = await web.nextError();
    expect(failure.error.message).toMatch(/^cannot read the catalog file: ENOENT/);
    await replaceCatalog({ services: { web: [{ address: "10.0.0.4", port: 80 }] } });
    expect(endpoints(await web.nextSnapshot())).toEqual(["10.0.0.4:80"]);
  });

  it("starts without the file, reporting it, and serves it once it appears", async () => {
    const web = new Recorder();
    source().watch("web", null, web);
    expect((await web.nextError()).error.message).toMatch(/ENOENT/);
    await replaceCatalog(CATALOG);
    expect(endpoints(await web.nextSnapshot())).toEqual(["10.0.0.1:8080", "10.0.0.2:8080/50"]);
  });
});

describe("FileSource: stopping", () => {
  it("stops telling a watch that was stopped, and keeps telling the others", async () => {
    await replaceCatalog(CATALOG);
    const files = source();
    const stopped = new Recorder();
    const kept = new Recorder();
    const stop = files.watch("web", null, stopped);
    files.watch("web", null, kept);
    await stopped.nextSnapshot();
    await kept.nextSnapshot();
    stop();
    await replaceCatalog({ services: { web: [{ address: "10.0.0.5", port: 80 }] } });
    expect(endpoints(await kept.nextSnapshot())).toEqual(["10.0.0.5:80"]);
    expect(stopped.events).toEqual([]);
  });

  it("tells nobody anything after close()", async () => {
    await replaceCatalog(CATALOG);
    const files = source();
    const web = new Recorder();
    files.watch("web", null, web);
    await web.nextSnapshot();
    await files.close();
    await replaceCatalog({ services: { web: [{ address: "10.0.0.5", port: 80 }] } });
    await sleep(QUIET_MS);
    await unlink(path);
    await sleep(QUIET_MS);
    expect(web.events).toEqual([]);
    expect(() => files.watch("web", null, new Recorder())).toThrow(/closed/);
  });

  it("keeps telling other listeners when one throws", async () => {
    await replaceCatalog(CATALOG);
    const files = source();
    const thrower: SnapshotListener = {
      snapshot: () => {
        throw new Error("listener bug");
      },
      error: () => {
        throw new Error("listener bug");
      },
    };
    const web = new Recorder();
    files.watch("web", null, thrower);
    files.watch("web", null, web);
    await web.nextSnapshot();
    await replaceCatalog({ services: { web: [{ address: "10.0.0.5", port: 80 }] } });
    expect(endpoints(await web.nextSnapshot())).toEqual(["10.0.0.5:80"]);
  });
});

describe("file source: pure parts", () => {
  it("parses a catalog and resolves watches from it", () => {
    const catalog = parseCatalog(JSON.stringify(CATALOG), "c.json");
    expect(endpoints(snapshotOf(catalog, "web", null))).toEqual(["10.0.0.1:8080", "10.0.0.2:8080/50"]);
    expect(endpoints(snapshotOf(catalog, "web", "canary"))).toEqual(["10.0.0.2:8080/50"]);
    expect(snapshotOf(catalog, "web", "nope")).toEqual({ key: "web#nope", servers: [], dropped: [] });
    expect(snapshotOf(catalog, "nope", null)).toEqual({ key: "nope", servers: [], dropped: [] });
  });

  it("refuses a file that is not a catalog, naming where", () => {
    expect(() => parseCatalog("[]", "c.json")).toThrow(InvalidInputError);
    expect(() => parseCatalog("{}", "c.json")).toThrow(/c\.json: services: /);
    expect(() => parseCatalog('{"services": {"web": 5}}', "c.json")).toThrow(/services\.web: /);
  });

  it("compares server sets regardless of order, with weights", () => {
    const catalog = parseCatalog(
      JSON.stringify({
        services: {
          a: [{ address: "10.0.0.1", port: 1 }, { address: "10.0.0.2", port: 2 }],
          b: [{ address: "10.0.0.2", port: 2 }, { address: "10.0.0.1", port: 1 }],
          c: [{ address: "10.0.0.2", port: 2, weight: 1 }, { address: "10.0.0.1", port: 1 }],
          d: [{ address: "10.0.0.2", port: 2 }],
        },
      }),
      "c.json",
    );
    const [a, b, c, d] = ["a", "b", "c", "d"].map((service) => snapshotOf(catalog, service, null));
    if (a === undefined || b === undefined || c === undefined || d === undefined) throw new Error("unreachable");
    expect(sameServers(a, b)).toBe(true);
    expect(sameServers(a, c)).toBe(false);
    expect(sameServers(a, d)).toBe(false);
  });
});
