import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ledgerEntrySchema, type LedgerEntry } from "../../agent/reconcile/ledger.js";
import { LedgerStore, ledgerFileName } from "../../agent/reconcile/ledger-store.js";

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function stateDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "hafleet-ledger-"));
  dirs.push(dir);
  return dir;
}

const drain: LedgerEntry = { state: "drain", endpoint: "10.0.0.1:80", since: 1_000 };
const placed = ledgerEntrySchema.parse({ state: "ready", endpoint: "10.0.0.2:80", since: 2_000, weight: 40 });

/** What versions before the hash wrote: a sanitised socket name, entries without weights. */
async function writeLegacy(dir: string, socket: string, entries: Record<string, LedgerEntry>): Promise<string> {
  const path = join(dir, `ledger-${socket.replace(/[^A-Za-z0-9._-]/g, "_")}.json`);
  await writeFile(path, JSON.stringify({ socket, entries }));
  return path;
}

describe("ledger file names", () => {
  it("keeps sockets apart that the sanitised name alone mapped to one file", () => {
    expect(ledgerFileName("/a_b.sock")).not.toBe(ledgerFileName("/a/b.sock"));
    expect(ledgerFileName("127.0.0.1:9999")).not.toBe(ledgerFileName("127.0.0.1_9999"));
  });

  it("starts with the readable socket name, bounded, then a hash of the exact name", () => {
    expect(ledgerFileName("/run/haproxy/admin.sock")).toMatch(/^ledger-_run_haproxy_admin\.sock-[0-9a-f]{16}\.json$/);
    const long = ledgerFileName(`/${"x".repeat(300)}.sock`);
    expect(long.length).toBeLessThan(100);
    expect(ledgerFileName("/a/b.sock")).toBe(ledgerFileName("/a/b.sock"));
  });

  it("gives colliding sockets each its own ledger", async () => {
    const dir = await stateDir();
    await new LedgerStore(dir, "/a_b.sock").save(new Map([["be/srv1", drain]]));
    await new LedgerStore(dir, "/a/b.sock").save(new Map([["be/srv2", placed]]));
    expect([...(await new LedgerStore(dir, "/a_b.sock").load()).keys()]).toEqual(["be/srv1"]);
    expect([...(await new LedgerStore(dir, "/a/b.sock").load()).keys()]).toEqual(["be/srv2"]);
  });
});

describe("LedgerStore", () => {
  it("starts empty, and reads back what it saved (weights and placements included)", async () => {
    const dir = await stateDir();
    const store = new LedgerStore(dir, "/run/haproxy/admin.sock");
    expect(await store.load()).toEqual(new Map());
    const entries = new Map([
      ["be/srv1", drain],
      ["be/srv2", placed],
    ]);
    await store.save(entries);
    expect(await new LedgerStore(dir, "/run/haproxy/admin.sock").load()).toEqual(entries);
    expect(JSON.parse(await readFile(store.path, "utf8")).socket).toBe("/run/haproxy/admin.sock");
  });

  it("reads a ledger under the old name once, and moves it on the first save", async () => {
    const dir = await stateDir();
    const legacy = await writeLegacy(dir, "/run/haproxy/admin.sock", { "be/srv1": drain });
    const store = new LedgerStore(dir, "/run/haproxy/admin.sock");
    const loaded = await store.load();
    expect(loaded).toEqual(new Map([["be/srv1", drain]]));
    // A dry run loads without saving: the old file stays until a save holds its entries.
    expect(await readdir(dir)).toEqual([legacy.slice(dir.length + 1)]);
    loaded.set("be/srv2", placed);
    await store.save(loaded);
    expect(await readdir(dir)).toEqual([store.path.slice(dir.length + 1)]);
    expect(await new LedgerStore(dir, "/run/haproxy/admin.sock").load()).toEqual(loaded);
  });

  it("leaves an old file that names another socket (the collision) to that socket", async () => {
    const dir = await stateDir();
    const legacy = await writeLegacy(dir, "/a/b.sock", { "be/srv1": drain });
    const other = new LedgerStore(dir, "/a_b.sock");
    expect(await other.load()).toEqual(new Map());
    await other.save(new Map());
    expect(await readdir(dir)).toContain(legacy.slice(dir.length + 1));
    expect(await new LedgerStore(dir, "/a/b.sock").load()).toEqual(new Map([["be/srv1", drain]]));
  });

  it("prefers the new file to an old one still lying around", async () => {
    const dir = await stateDir();
    await writeLegacy(dir, "/x.sock", { "be/old": drain });
    const store = new LedgerStore(dir, "/x.sock");
    await store.save(new Map([["be/new", placed]]));
    expect([...(await new LedgerStore(dir, "/x.sock").load()).keys()]).toEqual(["be/new"]);
  });

  it("refuses a file it cannot read as a ledger, naming it", async () => {
    const dir = await stateDir();
    const store = new LedgerStore(dir, "/x.sock");
    await writeFile(store.path, JSON.stringify({ socket: "/x.sock", entries: { "be/srv1": { state: "up", endpoint: null, since: 1 } } }));
    await expect(store.load()).rejects.toThrow(store.path);
  });
});
