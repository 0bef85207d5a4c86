import { readFile, writeFile } from "node:fs/promises";
import { request as httpRequest, createServer as createHttpServer } from "node:http";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { applyCommand } from "../../agent/cli/apply-command.js";
import { UsageError } from "../../agent/errors.js";
import { templateStampPath } from "../../agent/hybrid/hybrid-apply.js";
import { MasterCli } from "../../agent/hybrid/master-cli.js";
import { Reloader } from "../../agent/hybrid/reloader.js";
import type { RenderBalance } from "../../agent/hybrid/render-model.js";
import { saveServerState } from "../../agent/hybrid/state-file.js";
import { parseDesiredState } from "../../agent/model/desired-state.js";
import { RuntimeClient } from "../../agent/runtime/runtime-client.js";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";
import { serving, silentLogger, type ServerInput } from "../support/apply.js";
import { DEFAULT_TEMPLATE, startRendered as startRendered_, type RenderedHaproxy } from "../support/hybrid-rendered.js";
import { isHaproxyInstalled, type RunningHaproxy } from "../support/haproxy.js";
import { sendRaw } from "../support/raw-socket.js";
import { RuntimeApplier } from "../../agent/run/applier.js";
import { emptyDesiredSet, mergePush } from "../../agent/run/local-store.js";
import { openHybridSession, parseHybridFlags } from "../../agent/hybrid/hybrid-session.js";
import { nameSchema } from "../../agent/model/values.js";

/*
 * hafleet-agent apply in hybrid mode against HAProxy 2.6 in master-worker mode, started from a
 * file the default template rendered. Every verdict is read from HAProxy's own replies
 * (show proc, show info, show servers state) through the harness's raw socket code.
 */

type Started = RenderedHaproxy;

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  vi.restoreAllMocks();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

beforeAll(async () => {
  expect(await isHaproxyInstalled(), "haproxy must be installed (apt-get install haproxy) or HAPROXY_BIN set").toBe(true);
});

async function startRendered(backends: Array<{ name: string; balance: RenderBalance; servers: ServerInput[] }>, spareSlots: number): Promise<Started> {
  const started = await startRendered_(backends, spareSlots);
  cleanups.push(() => started.h.stop());
  return started;
}

function desiredFile(h: RunningHaproxy, backends: Record<string, ServerInput[]>): Promise<string> {
  const path = join(h.dir, `desired-${Math.random().toString(36).slice(2)}.json`);
  return writeFile(path, JSON.stringify({ backends: Object.entries(backends).map(([name, servers]) => ({ name, servers })) })).then(() => path);
}

/** `hafleet-agent apply` in hybrid mode, in-process, output captured. */
async function apply(s: Started, backends: Record<string, ServerInput[]>, template = DEFAULT_TEMPLATE, spareSlots = 1): Promise<{ code: number; stdout: string; stderr: string }> {
  const file = await desiredFile(s.h, backends);
  const varArgs = Object.entries(s.vars).flatMap(([key, value]) => ["--var", `${key}=${value}`]);
  const args = ["--socket", s.h.socket, "--desired", file, "--state-dir", join(s.h.dir, "ledger"), "--drain-period", "0s", "--wait", "2s"];
  args.push("--config-template", template, "--config-out", s.h.configPath, "--state-file", s.stateFile, "--master-socket", s.h.masterSocket!, "--spare-slots", String(spareSlots), ...varArgs);
  let stdout = "";
  let stderr = "";
  vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => ((stdout += String(chunk)), true));
  vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => ((stderr += String(chunk)), true));
  try {
    const code = await applyCommand(args, silentLogger);
    return { code, stdout, stderr };
  } finally {
    vi.restoreAllMocks();
  }
}

/** The master's own counters, read without the product's parser. */
async function rawProc(masterSocket: string): Promise<{ reloads: number; failed: number; workers: number[] }> {
  const text = await sendRaw(masterSocket, "show proc");
  const counters = /^\d+ +master +(\d+) \[failed: (\d+)\]/m.exec(text);
  if (!counters) throw new Error(`unexpected show proc: ${text}`);
  const workers = (/# workers\n([\s\S]*?)# /.exec(text)?.[1] ?? "").split("\n").filter((line) => line !== "").map((line) => Number(line.split(/ +/)[0]));
  return { reloads: Number(counters[1]), failed: Number(counters[2]), workers };
}

async function servingPid(h: RunningHaproxy): Promise<number> {
  return Number(/^Pid: (\d+)$/m.exec(await h.command("show info"))?.[1]);
}

/** `name -> addr:port` of one backend's `server` lines in the file on disk. */
function fileServers(text: string, backend: string): Record<string, string> {
  const section = text.split(/^backend /m).find((part) => part.startsWith(`${backend}\n`)) ?? "";
  return Object.fromEntries([...section.matchAll(/^ +server (\S+) (\S+):(\d+)/gm)].map((m) => [m[1]!, `${m[2]}:${m[3]}`]));
}

function runningServers(rows: ReadonlyArray<Record<string, string>>, backend: string): Record<string, string> {
  return Object.fromEntries(rows.filter((row) => row.be_name === backend).map((row) => [row.srv_name!, `${row.srv_addr}:${row.srv_port}`]));
}

/**
 * `name -> addr:port admin w`, without the config-maintenance bit (0x04): it only says whether
 * the config line says `disabled`, which a re-render changes for a slot filled or emptied at
 * runtime; maintenance itself is 0x01 (SRV_ADMF_MAINT is 0x23, without it).
 */
function state(rows: ReadonlyArray<Record<string, string>>, backend: string): Record<string, string> {
  return Object.fromEntries(
    rows.filter((row) => row.be_name === backend).map((row) => [row.srv_name!, `${row.srv_addr}:${row.srv_port} admin=${Number(row.srv_admin_state) & ~0x04} w=${row.srv_uweight}`]),
  );
}

function servers(n: number, base: number, weight?: number): ServerInput[] {
  return Array.from({ length: n }, (_, i) => ({ address: `127.0.${base}.${i + 1}`, port: 9000 + i + 1, ...(weight === undefined ? {} : { weight }) }));
}

describe("hafleet-agent apply in hybrid mode", () => {
  it("scales past every slot of a static-rr backend with exactly one reload; the file matches what runs", async () => {
    const s = await startRendered([{ name: "be_static", balance: "static-rr", servers: servers(2, 1) }], 1);
    const before = await rawProc(s.h.masterSocket!);

    const wanted = servers(6, 1);
    const result = await apply(s, { be_static: wanted });

    expect(result.stderr).toContain("reloaded (be_static: 3 server(s) without a free slot)");
    expect(result.code, result.stdout + result.stderr).toBe(0);
    const after = await rawProc(s.h.masterSocket!);
    expect(after.reloads).toBe(before.reloads + 1);
    expect(after.failed).toBe(0);
    const rows = await s.h.serversState("be_static");
    expect(serving(rows, "be_static")).toEqual(wanted.map((server) => `${server.address}:${server.port}`).sort());
    // Names, addresses and ports, spare slots included: a later reload from the file changes nothing.
    const onDisk = fileServers(await readFile(s.h.configPath, "utf8"), "be_static");
    expect(onDisk).toEqual(runningServers(rows, "be_static"));
    expect(Object.keys(onDisk)).toEqual(["srv1", "srv2", "srv3", "srv4", "srv5", "srv6", "srv7"]);

    // The same desired state again: nothing to place, no reload, no write.
    const again = await apply(s, { be_static: wanted });
    expect(again.code).toBe(0);
    expect(again.stderr).toContain(`${s.h.configPath}: unchanged`);
    expect((await rawProc(s.h.masterSocket!)).reloads).toBe(after.reloads);
  }, 40_000);

  it("does the same for the run mode: its applier reloads once and the pushed servers all run", async () => {
    const s = await startRendered([{ name: "be_static", balance: "static-rr", servers: servers(2, 1) }], 1);
    const before = await rawProc(s.h.masterSocket!);
    const settings = parseHybridFlags({ "config-template": DEFAULT_TEMPLATE, "config-out": s.h.configPath, "state-file": s.stateFile, "master-socket": s.h.masterSocket!, "spare-slots": "1", var: Object.entries(s.vars).map(([key, value]) => `${key}=${value}`) })!;
    const hybrid = await openHybridSession(settings, s.h.socket);
    const applier = new RuntimeApplier({ sockets: [parseSocketAddress(s.h.socket)], stateDir: join(s.h.dir, "run-state"), drainMs: 0, logger: silentLogger, hybrid });
    try {
      const wanted = servers(6, 1);
      const push = { version: "v1", removedBackends: [], backends: [{ name: nameSchema.parse("be_static"), version: "b1", allowEmpty: false, servers: parseDesiredState({ backends: [{ name: "be_static", servers: wanted }] }, "test").backends[0]!.servers }] };
      const [result] = await applier.apply(mergePush(emptyDesiredSet(), push));
      expect(result && "error" in result ? result.error : result?.converged).toBe(true);
      expect((await rawProc(s.h.masterSocket!)).reloads).toBe(before.reloads + 1);
      expect(serving(await s.h.serversState("be_static"), "be_static")).toEqual(wanted.map((server) => `${server.address}:${server.port}`).sort());
    } finally {
      applier.close();
    }
  }, 40_000);

  it("coalesces the run mode's renders: a burst of pushes writes the file less often, and close() writes the last", async () => {
    const s = await startRendered([{ name: "be_app", balance: "roundrobin", servers: servers(2, 1) }], 8);
    const settings = parseHybridFlags({ "config-template": DEFAULT_TEMPLATE, "config-out": s.h.configPath, "state-file": s.stateFile, "master-socket": s.h.masterSocket!, "spare-slots": "8", var: Object.entries(s.vars).map(([key, value]) => `${key}=${value}`) })!;
    const applier = new RuntimeApplier({ sockets: [parseSocketAddress(s.h.socket)], stateDir: join(s.h.dir, "run-state"), drainMs: 0, logger: silentLogger, hybrid: await openHybridSession(settings, s.h.socket) });
    const reloadsBefore = (await rawProc(s.h.masterSocket!)).reloads;
    const versionsOnDisk = new Set<string>();
    let set = emptyDesiredSet();
    for (let n = 1; n <= 8; n++) {
      const wanted = parseDesiredState({ backends: [{ name: "be_app", servers: servers(n, 1) }] }, "test").backends[0]!.servers;
      set = mergePush(set, { version: `v${n}`, removedBackends: [], backends: [{ name: nameSchema.parse("be_app"), version: `b${n}`, allowEmpty: false, servers: wanted }] });
      const [result] = await applier.apply(set);
      expect(result && "error" in result ? result.error : result?.converged).toBe(true);
      versionsOnDisk.add(await readFile(s.h.configPath, "utf8"));
    }
    // Eight changes of what runs, fewer versions of the file: the writer waits out its interval.
    expect(versionsOnDisk.size).toBeLessThan(8);
    await applier.close();
    // Every running server is in the file as it runs (the file may hold more spare slots).
    expect(fileServers(await readFile(s.h.configPath, "utf8"), "be_app")).toMatchObject(runningServers(await s.h.serversState("be_app"), "be_app"));
    expect(Object.values(fileServers(await readFile(s.h.configPath, "utf8"), "be_app"))).toContain("127.0.1.8:9008");
    expect((await rawProc(s.h.masterSocket!)).reloads).toBe(reloadsBefore);
  }, 40_000);

  it("keeps runtime changes (addresses, ports, weights, an operator's drain) through a reload from outside", async () => {
    const s = await startRendered(
      [
        { name: "be_app", balance: "roundrobin", servers: servers(3, 2) },
        { name: "be_static", balance: "static-rr", servers: servers(1, 3) },
      ],
      2,
    );
    const changed = { be_app: [{ address: "127.0.2.1", port: 9001, weight: 30 }, { address: "127.0.2.9", port: 9109, weight: 7 }, { address: "127.0.2.3", port: 9003 }], be_static: [...servers(1, 3), { address: "127.0.3.7", port: 9207 }] };
    const result = await apply(s, changed);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stderr).not.toContain("reloaded");
    // An operator drains a server by hand; the file cannot hold a drain, the state file does.
    expect(await s.h.command("set server be_app/srv3 state drain")).toMatch(/^\s*$/);
    const runningBefore = await s.h.serversState();
    const proc = await rawProc(s.h.masterSocket!);

    // A reload as `hafleet-agent reload` does it: the state file saved first.
    const client = new RuntimeClient(parseSocketAddress(s.h.socket));
    cleanups.push(async () => client.close());
    const reloader = new Reloader(new MasterCli(parseSocketAddress(s.h.masterSocket!)), {
      minIntervalMs: 0,
      prepare: async () => {
        await saveServerState(client, s.stateFile);
        client.close();
      },
    });
    const reload = await reloader.reload();
    await waitServedBy(s.h, reload.workerPid);

    expect((await rawProc(s.h.masterSocket!)).reloads).toBe(proc.reloads + 1);
    const runningAfter = await s.h.serversState();
    for (const backend of ["be_app", "be_static"]) expect(state(runningAfter, backend), backend).toEqual(state(runningBefore, backend));
    expect(state(runningAfter, "be_app")).toEqual({
      "srv1": "127.0.2.1:9001 admin=0 w=30",
      // Removed from the desired set: drained, then maintenance (a drain period of 0 s).
      "srv2": "127.0.2.2:9002 admin=1 w=1",
      // The operator's drain: only the server-state file carries it.
      "srv3": "127.0.2.3:9003 admin=8 w=1",
      "srv4": "127.0.2.9:9109 admin=0 w=7",
      "srv5": "0.0.0.0:80 admin=1 w=1",
    });
    expect(state(runningAfter, "be_static")).toEqual({ "srv1": "127.0.3.1:9001 admin=0 w=1", "srv2": "127.0.3.7:9207 admin=0 w=1", "srv3": "0.0.0.0:80 admin=1 w=1" });
  }, 40_000);

  it("reloads once for a changed template, and once for a backend HAProxy lacks, which then runs", async () => {
    const s = await startRendered([{ name: "be_static", balance: "static-rr", servers: servers(1, 5) }], 1);
    expect((await apply(s, { be_static: servers(1, 5) })).code).toBe(0);
    const start = await rawProc(s.h.masterSocket!);

    const edited = join(s.h.dir, "edited.njk");
    await writeFile(edited, (await readFile(DEFAULT_TEMPLATE, "utf8")).replace("timeout client 30s", "timeout client 31s"));
    const changed = await apply(s, { be_static: servers(1, 5) }, edited);
    expect(changed.code, changed.stderr).toBe(0);
    expect(changed.stderr).toContain("reloaded (the template or its variables changed)");
    expect(await readFile(s.h.configPath, "utf8")).toContain("timeout client 31s");
    expect((await rawProc(s.h.masterSocket!)).reloads).toBe(start.reloads + 1);
    // Recorded: the same template again is no change.
    expect((await apply(s, { be_static: servers(1, 5) }, edited)).stderr).not.toContain("reloaded");
    expect((await rawProc(s.h.masterSocket!)).reloads).toBe(start.reloads + 1);
    expect(serving(await s.h.serversState("be_static"), "be_static")).toEqual(["127.0.5.1:9001"]);

    // A desired backend the running HAProxy lacks: rendered from the desired state, one reload.
    const missing = await apply(s, { be_static: servers(1, 5), be_new: servers(2, 6) }, edited);
    expect(missing.code, missing.stderr).toBe(0);
    expect(missing.stderr).toContain("reloaded (be_new: not in the running HAProxy)");
    expect((await rawProc(s.h.masterSocket!)).reloads).toBe(start.reloads + 2);
    expect(serving(await s.h.serversState("be_new"), "be_new")).toEqual(["127.0.6.1:9001", "127.0.6.2:9002"]);
    expect(fileServers(await readFile(s.h.configPath, "utf8"), "be_new")).toEqual(runningServers(await s.h.serversState("be_new"), "be_new"));
  }, 40_000);

  it("a reload that fails: the old worker serves on, the file is rolled back, apply exits 1", async () => {
    const s = await startRendered([{ name: "be_static", balance: "static-rr", servers: servers(1, 4) }], 1);
    // The first apply records which template the running file came from.
    expect((await apply(s, { be_static: servers(1, 4) })).code).toBe(0);
    expect(await readFile(templateStampPath(s.h.configPath), "utf8")).toMatch(/^[0-9a-f]{64}\n$/);
    const goodBytes = await readFile(s.h.configPath);
    const oldPid = await servingPid(s.h);
    const before = await rawProc(s.h.masterSocket!);

    // Valid for `haproxy -c`, which binds nothing; the reload cannot bind a port another process holds.
    const busy = await listen();
    cleanups.push(() => new Promise((resolve) => busy.server.close(() => resolve())));
    const badTemplate = join(s.h.dir, "busy-port.njk");
    const source = await readFile(DEFAULT_TEMPLATE, "utf8");
    await writeFile(badTemplate, source.replace("frontend fe_main", `frontend fe_busy\n    bind 127.0.0.1:${busy.port}\n\nfrontend fe_main`));

    const result = await apply(s, { be_static: servers(1, 4) }, badTemplate);

    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/FAILED: HAProxy's reload failed/);
    expect(result.stderr).toContain("was restored to the previous file");
    expect(await readFile(s.h.configPath)).toEqual(goodBytes);
    const after = await rawProc(s.h.masterSocket!);
    expect(after.failed).toBeGreaterThan(0);
    expect(after.workers).toEqual(before.workers);
    expect(await servingPid(s.h)).toBe(oldPid);
    expect(serving(await s.h.serversState("be_static"), "be_static")).toEqual(["127.0.4.1:9001"]);
  }, 40_000);
});

async function waitServedBy(h: RunningHaproxy, pid: number): Promise<void> {
  const deadline = Date.now() + 3_000;
  while ((await servingPid(h)) !== pid && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
}

function listen(): Promise<{ server: Server; port: number }> {
  return new Promise((resolve, reject) => {
    const server = createServer((socket) => socket.destroy());
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      if (address === null || typeof address === "string") return reject(new Error("no port"));
      resolve({ server, port: address.port });
    });
  });
}

describe("hafleet-agent apply hybrid flags", () => {
  it("refuses a partial set of hybrid flags, and hybrid mode on several sockets, before touching anything", async () => {
    const partial = applyCommand(["--socket", "/nonexistent.sock", "--desired", "/nonexistent.json", "--config-template", DEFAULT_TEMPLATE], silentLogger);
    await expect(partial).rejects.toThrow("hybrid mode needs --config-template, --config-out, --state-file and --master-socket together; missing --config-out, --state-file, --master-socket");
    const hybrid = ["--config-template", DEFAULT_TEMPLATE, "--config-out", "/nonexistent/h.cfg", "--state-file", "/nonexistent/s", "--master-socket", "/nonexistent/m.sock"];
    const several = applyCommand(["--socket", "/a.sock", "--socket", "/b.sock", "--desired", "/nonexistent.json", ...hybrid], silentLogger);
    await expect(several).rejects.toThrow(UsageError);
  });
});

describe("hybrid mode under load", () => {
  it("scales up and down with reloads while HTTP requests run: no request fails", async () => {
    const upstreams = await Promise.all(Array.from({ length: 8 }, () => httpUpstream()));
    cleanups.push(async () => void (await Promise.all(upstreams.map((u) => new Promise<void>((resolve) => u.server.close(() => resolve()))))));
    const endpoint = (count: number): ServerInput[] => upstreams.slice(0, count).map((u) => ({ address: "127.0.0.1", port: u.port }));
    const s = await startRendered([{ name: "be_static", balance: "static-rr", servers: endpoint(2) }], 0);
    const bind = s.vars["bind"]!;
    const port = Number(bind.slice(bind.lastIndexOf(":") + 1));
    const start = await rawProc(s.h.masterSocket!);

    const load = runLoad(port, 4, 4_000);
    let beforeLastReload = -1;
    // Each new maximum outgrows every slot (no spares) on a static-rr backend: a reload.
    for (const size of [4, 2, 6, 3, 8, 2]) {
      if (size === 8) beforeLastReload = load.completed();
      const result = await apply(s, { be_static: endpoint(size) }, DEFAULT_TEMPLATE, 0);
      expect(result.code, result.stdout + result.stderr).toBe(0);
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
    const stats = await load.stop();
    const reloads = (await rawProc(s.h.masterSocket!)).reloads - start.reloads;
    console.log(`hybrid load: ${stats.ok + stats.failed} requests, ${stats.failed} failed, ${reloads} reload(s)`);
    expect(reloads).toBe(3);
    expect(stats.ok).toBeGreaterThan(100);
    // The load did not run out before the last reload: requests went on through it.
    expect(stats.ok + stats.failed).toBeGreaterThan(beforeLastReload + 20);
    expect(stats.failures).toEqual([]);
    expect(stats.failed).toBe(0);
  }, 60_000);
});

function httpUpstream(): Promise<{ server: ReturnType<typeof createHttpServer>; port: number }> {
  return new Promise((resolve, reject) => {
    const server = createHttpServer((_request, response) => response.end("ok\n"));
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      if (address === null || typeof address === "string") return reject(new Error("no port"));
      resolve({ server, port: address.port });
    });
  });
}

/** `workers` sequential clients, keep-alive off, at most `limit` requests in all. */
function runLoad(port: number, workers: number, limit: number): { completed(): number; stop(): Promise<{ ok: number; failed: number; failures: string[] }> } {
  let stopped = false;
  let sent = 0;
  const stats = { ok: 0, failed: 0, failures: [] as string[] };
  const one = () =>
    new Promise<void>((resolve) => {
      const request = httpRequest({ host: "127.0.0.1", port, path: "/", agent: false, headers: { connection: "close" }, timeout: 5_000 }, (response) => {
        response.resume();
        response.on("end", () => {
          if (response.statusCode === 200) stats.ok++;
          else (stats.failed++, stats.failures.push(`HTTP ${response.statusCode}`));
          resolve();
        });
      });
      request.on("timeout", () => request.destroy(new Error("timeout")));
      request.on("error", (error) => {
        stats.failed++;
        stats.failures.push(error.message);
        resolve();
      });
      request.end();
    });
  const loops = Array.from({ length: workers }, async () => {
    while (!stopped && sent < limit) {
      sent++;
      await one();
      // Paced, so the bounded count lasts through every scaling step on a fast machine too.
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  });
  return {
    completed: () => stats.ok + stats.failed,
    async stop() {
      stopped = true;
      await Promise.all(loops);
      return stats;
    },
  };
}
