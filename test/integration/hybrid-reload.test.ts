import { existsSync } from "node:fs";
import { appendFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ConnectionLostError, ReplyParseError } from "../../agent/errors.js";
import { MasterCli } from "../../agent/hybrid/master-cli.js";
import { ReloadFailedError, Reloader, type ReloaderOptions } from "../../agent/hybrid/reloader.js";
import { saveServerState } from "../../agent/hybrid/state-file.js";
import { RuntimeCommand } from "../../agent/runtime/commands.js";
import type { CommandReply } from "../../agent/runtime/reply.js";
import { RuntimeClient } from "../../agent/runtime/runtime-client.js";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";
import { silentLogger } from "../support/apply.js";
import { runAgent } from "../support/cli.js";
import { parseServersState, startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { sendRaw } from "../support/raw-socket.js";

/*
 * HAProxy 2.6 in master-worker mode, with `server-state-file` in global and
 * `load-server-state-from-file global` in each backend. Outcomes are checked on HAProxy's own
 * replies through the harness's raw socket code (show proc, show info, show servers state).
 */

const SECTIONS = `
backend be_slots
    load-server-state-from-file global
    balance roundrobin
    server-template srv 1-3 0.0.0.0:80 disabled

backend be_fixed
    load-server-state-from-file global
    server s1 127.0.0.1:9001
    server s2 127.0.0.1:9002

backend be_host
    load-server-state-from-file global
    server-template h 1-2 localhost:80 init-addr last,libc,none resolve-prefer ipv4 disabled
`;

interface Hybrid {
  h: RunningHaproxy;
  stateFile: string;
  master: MasterCli;
  masterSocket: string;
  client: RuntimeClient;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function startHybrid(): Promise<Hybrid> {
  const stateDir = await mkdtemp(join(tmpdir(), "hafleet-state-"));
  cleanups.push(() => rm(stateDir, { recursive: true, force: true }));
  const stateFile = join(stateDir, "server-state");
  const h = await startHaproxy({ sections: SECTIONS, masterWorker: true, globalExtra: `    server-state-file ${stateFile}` });
  cleanups.push(() => h.stop());
  const masterSocket = h.masterSocket!;
  const client = new RuntimeClient(parseSocketAddress(h.socket));
  cleanups.push(async () => client.close());
  return { h, stateFile, masterSocket, master: new MasterCli(parseSocketAddress(masterSocket)), client };
}

/** The reloader as the agent wires it: the state file saved inside each reload. */
function reloaderFor(hybrid: Hybrid, options: Partial<ReloaderOptions> = {}): Reloader {
  return new Reloader(hybrid.master, {
    minIntervalMs: 0,
    logger: silentLogger,
    prepare: async () => {
      await saveServerState(hybrid.client, hybrid.stateFile);
      // A kept-alive admin connection would pin the old worker and keep reading its state.
      hybrid.client.close();
    },
    ...options,
  });
}

/** The master's own words, read without the product's parser. */
async function rawProc(masterSocket: string): Promise<{ reloads: number; failed: number; workers: number[]; serving: number[]; version: number; text: string }> {
  const text = await sendRaw(masterSocket, "show proc");
  const counters = /^\d+ +master +(\d+) \[failed: (\d+)\] +\S+ +(\d+)\.(\d+)/m.exec(text);
  if (!counters) throw new Error(`unexpected show proc: ${text}`);
  // 3.1+ prints `# programs` only when there are some, and lists the worker that survives a
  // failed reload under `# old workers` with `# workers` empty.
  const section = (title: string) => (new RegExp(`^# ${title}\n((?:\\d.*\n)*)`, "m").exec(text)?.[1] ?? "").split("\n").filter((line) => line !== "").map((line) => Number(line.split(/ +/)[0]));
  const workers = section("workers");
  const old = section("old workers");
  return { reloads: Number(counters[1]), failed: Number(counters[2]), workers, serving: workers.length > 0 ? workers : old.slice(0, 1), version: Number(counters[3]) + Number(counters[4]) / 10, text };
}

async function servingPid(h: RunningHaproxy): Promise<number> {
  return Number(/^Pid: (\d+)$/m.exec(await h.command("show info"))?.[1]);
}

/**
 * The pid answering new admin connections once it is `expected`, or the last one seen after 2 s:
 * the master lists the new worker as it forks it, and the old one stops accepting on its signal.
 */
async function servedBy(h: RunningHaproxy, expected: number): Promise<number> {
  const deadline = Date.now() + 2_000;
  for (;;) {
    const pid = await servingPid(h);
    if (pid === expected || Date.now() > deadline) return pid;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** What a runtime change is judged by; srv_time_since_last_change and check columns move on their own. */
async function servers(h: RunningHaproxy): Promise<Record<string, string>> {
  const rows = await h.serversState();
  return Object.fromEntries(rows.map((row) => [`${row.be_name}/${row.srv_name}`, `${row.srv_addr}:${row.srv_port} admin=${row.srv_admin_state} w=${row.srv_uweight}`]));
}

describe("reloading HAProxy through the master CLI", () => {
  it("reloads: a new worker serves the admin socket, and the state file was written first", async () => {
    const hybrid = await startHybrid();
    const before = await rawProc(hybrid.masterSocket);
    const oldPid = await servingPid(hybrid.h);
    expect(before.workers).toEqual([oldPid]);

    const reloader = reloaderFor(hybrid);
    const result = await reloader.reload();

    expect(result.previousWorkerPids).toEqual([oldPid]);
    expect(result.workerPid).not.toBe(oldPid);
    expect(result.workerPids).toEqual([result.workerPid]);
    expect(result.masterPid).toBe(hybrid.h.pid());
    expect(reloader.workerPid).toBe(result.workerPid);
    const after = await rawProc(hybrid.masterSocket);
    expect(after).toMatchObject({ reloads: before.reloads + 1, failed: 0, workers: [result.workerPid] });
    expect(await servedBy(hybrid.h, result.workerPid)).toBe(result.workerPid);
    expect(Object.keys(await servers(hybrid.h))).toHaveLength(7);
    // The file holds what ran just before the reload, in HAProxy's own format.
    const saved = parseServersState(await readFile(hybrid.stateFile, "utf8"));
    expect(saved.map((row) => `${row.be_name}/${row.srv_name}`)).toEqual(Object.keys(await servers(hybrid.h)));
    expect(result.elapsedMs).toBeLessThan(5_000);
  });

  it("keeps what 2.6 carries over through the state file, and documents what it loses", async () => {
    const hybrid = await startHybrid();
    const changes = [
      "set server be_slots/srv1 addr 127.0.0.1 port 8081",
      "set server be_slots/srv1 weight 50",
      "set server be_slots/srv1 state ready",
      "set server be_slots/srv2 addr 127.0.0.2 port 8082",
      "set server be_slots/srv2 state ready",
      "set server be_slots/srv2 state drain",
      "set server be_slots/srv3 addr 127.0.0.3 port 8083",
      "set server be_fixed/s1 state maint",
      "set server be_fixed/s2 addr 127.0.0.4 port 8084",
      "set server be_fixed/s2 state drain",
      "set server be_host/h1 addr 127.0.0.5 port 8085",
      "set server be_host/h1 state ready",
      "add server be_slots/dyn1 127.0.0.9:8089",
    ];
    await hybrid.h.command(changes.join(";"));
    expect(await servers(hybrid.h)).toEqual({
      "be_slots/srv1": "127.0.0.1:8081 admin=4 w=50",
      "be_slots/srv2": "127.0.0.2:8082 admin=12 w=1",
      "be_slots/srv3": "127.0.0.3:8083 admin=5 w=1",
      "be_slots/dyn1": "127.0.0.9:8089 admin=1 w=1",
      "be_fixed/s1": "127.0.0.1:9001 admin=1 w=1",
      "be_fixed/s2": "127.0.0.4:8084 admin=8 w=1",
      "be_host/h1": "127.0.0.5:8085 admin=4 w=1",
      "be_host/h2": "127.0.0.1:80 admin=5 w=1",
    });

    await reloaderFor(hybrid).reload();

    expect(await servers(hybrid.h)).toEqual({
      // Port, weight and ready/drain/maint come back; the address reverts to the config's IP literal.
      "be_slots/srv1": "0.0.0.0:8081 admin=4 w=50",
      "be_slots/srv2": "0.0.0.0:8082 admin=12 w=1",
      "be_slots/srv3": "0.0.0.0:8083 admin=5 w=1",
      // A server added at runtime is gone: the config does not have it.
      "be_fixed/s1": "127.0.0.1:9001 admin=1 w=1",
      "be_fixed/s2": "127.0.0.1:8084 admin=8 w=1",
      // A hostname with `init-addr last,...` takes its address from the state file as well.
      "be_host/h1": "127.0.0.5:8085 admin=4 w=1",
      "be_host/h2": "127.0.0.1:80 admin=5 w=1",
    });

    // The file, not HAProxy's memory, is what carries them: a change made after the last save is lost.
    await hybrid.h.command("set server be_slots/srv1 weight 77");
    await new Reloader(hybrid.master, { minIntervalMs: 0, logger: silentLogger }).reload();
    expect((await servers(hybrid.h))["be_slots/srv1"]).toBe("0.0.0.0:8081 admin=4 w=50");
  });

  it("reports a failed reload, and the old worker keeps serving", async () => {
    const hybrid = await startHybrid();
    const oldPid = await servingPid(hybrid.h);
    const good = await readFile(hybrid.h.configPath, "utf8");
    await appendFile(hybrid.h.configPath, "    bogus_keyword 1\n");

    const reloader = reloaderFor(hybrid);
    const error = await reloader.reload().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ReloadFailedError);
    expect(error).toMatchObject({ code: "HAFLEET_RELOAD_FAILED", servingPids: [oldPid], failedReloads: 1, prompt: "master[ReloadFailed]> " });
    expect(reloader.workerPid).toBe(oldPid);
    expect(await servingPid(hybrid.h)).toBe(oldPid);
    expect(await rawProc(hybrid.masterSocket)).toMatchObject({ reloads: 1, failed: 1, serving: [oldPid] });
    expect(Object.keys(await servers(hybrid.h))).toHaveLength(7);

    // Repaired, the next reload succeeds and 2.6 resets its failed counter.
    await writeFile(hybrid.h.configPath, good);
    const result = await reloader.reload();
    expect(result.previousWorkerPids).toEqual([oldPid]);
    expect(await rawProc(hybrid.masterSocket)).toMatchObject({ reloads: 2, failed: 0, workers: [result.workerPid] });
  });

  it("turns concurrent calls into one reload, and calls made during it into one more", async () => {
    const hybrid = await startHybrid();
    const before = (await rawProc(hybrid.masterSocket)).reloads;
    const shared = reloaderFor(hybrid);
    const results = await Promise.all(Array.from({ length: 5 }, () => shared.reload()));
    expect(new Set(results.map((result) => result.workerPid)).size).toBe(1);
    expect((await rawProc(hybrid.masterSocket)).reloads).toBe(before + 1);

    let later: Array<Promise<unknown>> = [];
    const reloader: Reloader = reloaderFor(hybrid, {
      prepare: async () => {
        await saveServerState(hybrid.client, hybrid.stateFile);
        hybrid.client.close();
        // Called while this reload runs: they may have changed what it already read.
        if (later.length === 0) later = [reloader.reload(), reloader.reload(), reloader.reload()];
      },
    });
    const first = await reloader.reload();
    const second = (await Promise.all(later)) as Array<{ workerPid: number }>;
    expect(new Set(second.map((result) => result.workerPid)).size).toBe(1);
    expect(second[0]!.workerPid).not.toBe(first.workerPid);
    expect((await rawProc(hybrid.masterSocket)).reloads).toBe(before + 3);
  });

  it("keeps an admin connection opened before the reload on the old worker", async () => {
    const hybrid = await startHybrid();
    const oldPid = await servingPid(hybrid.h);
    const kept = new RuntimeClient(parseSocketAddress(hybrid.h.socket));
    try {
      await kept.run([RuntimeCommand.showInfo()]);
      const result = await new Reloader(hybrid.master, { minIntervalMs: 0, logger: silentLogger }).reload();
      const [info] = await kept.run([RuntimeCommand.showInfo()]);
      expect(Number(/^Pid: (\d+)$/m.exec(info!.text)?.[1])).toBe(oldPid);
      expect((await rawProc(hybrid.masterSocket)).text).toContain("# old workers");
      expect(await servedBy(hybrid.h, result.workerPid)).toBe(result.workerPid);
    } finally {
      kept.close();
    }
  });
});

describe("the server-state file", () => {
  it("is never replaced by a reply that does not parse", async () => {
    const hybrid = await startHybrid();
    await saveServerState(hybrid.client, hybrid.stateFile);
    const good = await readFile(hybrid.stateFile, "utf8");
    expect(good.startsWith("1\n# be_id be_name srv_id srv_name srv_addr")).toBe(true);
    expect(good.endsWith("\n") && !good.endsWith("\n\n")).toBe(true);
    const lines = good.trimEnd().split("\n");

    const garbled = [
      "",
      lines.slice(0, -1).join("\n") + "\n" + lines.at(-1)!.slice(0, 20),
      lines.join("\n").replace(" be_slots 1 srv1 ", " be_slots 1 srv1  "),
      "Unknown command, but maybe one of the following ones is a better match:\n  help [<command>]  : list matching or all commands",
      "2\n" + lines.slice(1).join("\n"),
      lines.slice(1).join("\n"),
    ];
    for (const text of garbled) {
      const fake = { run: async (commands: readonly RuntimeCommand[]): Promise<CommandReply[]> => commands.map((command) => ({ command, ok: true, text })) };
      await expect(saveServerState(fake, hybrid.stateFile)).rejects.toBeInstanceOf(ReplyParseError);
      expect(await readFile(hybrid.stateFile, "utf8")).toBe(good);
    }
    const lost = { run: async (): Promise<CommandReply[]> => Promise.reject(new ConnectionLostError("fake", 0, 1)) };
    await expect(saveServerState(lost, hybrid.stateFile)).rejects.toBeInstanceOf(ConnectionLostError);
    expect(await readFile(hybrid.stateFile, "utf8")).toBe(good);

    // And no reload happens on a state that could not be saved.
    const before = (await rawProc(hybrid.masterSocket)).reloads;
    const fake = { run: async (commands: readonly RuntimeCommand[]): Promise<CommandReply[]> => commands.map((command) => ({ command, ok: true, text: garbled[1]! })) };
    const reloader = new Reloader(hybrid.master, { minIntervalMs: 0, logger: silentLogger, prepare: async () => void (await saveServerState(fake, hybrid.stateFile)) });
    await expect(reloader.reload()).rejects.toBeInstanceOf(ReplyParseError);
    expect((await rawProc(hybrid.masterSocket)).reloads).toBe(before);
    expect(await readFile(hybrid.stateFile, "utf8")).toBe(good);
  });

  it("serialises saves to one path: concurrent saves all land, the file is whole", async () => {
    const hybrid = await startHybrid();
    const saves = await Promise.all(Array.from({ length: 8 }, () => saveServerState(hybrid.client, hybrid.stateFile)));
    expect(saves.map((saved) => saved.servers)).toEqual(Array(8).fill(7));
    expect(parseServersState(await readFile(hybrid.stateFile, "utf8"))).toHaveLength(7);
  });
});

describe("hafleet-agent save-state and reload", () => {
  it("save-state writes what HAProxy runs, exit 0; an unreachable socket is exit 3 and no file", async () => {
    const hybrid = await startHybrid();
    await hybrid.h.command("set server be_slots/srv1 weight 42");
    const saved = await runAgent(["save-state", "--socket", hybrid.h.socket, "--state-file", hybrid.stateFile]);
    expect(saved.code).toBe(0);
    expect(saved.stdout).toBe(`${hybrid.h.socket}: wrote 7 server(s) to ${hybrid.stateFile}\n`);
    const row = parseServersState(await readFile(hybrid.stateFile, "utf8")).find((entry) => entry.srv_name === "srv1");
    expect(row?.srv_uweight).toBe("42");

    const elsewhere = join(hybrid.h.dir, "other-state");
    const unreachable = await runAgent(["save-state", "--socket", join(hybrid.h.dir, "absent.sock"), "--state-file", elsewhere]);
    expect(unreachable.code).toBe(3);
    expect(unreachable.stderr).toContain("cannot connect to HAProxy");
    expect(existsSync(elsewhere)).toBe(false);

    const usage = await runAgent(["save-state", "--socket", hybrid.h.socket]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("save-state needs --socket and --state-file");
  });

  it("reload: exit 0 with the new worker's pid; exit 1 with HAProxy's reason when it fails; exit 3 unreachable", async () => {
    const hybrid = await startHybrid();
    const oldPid = await servingPid(hybrid.h);
    const args = ["reload", "--master-socket", hybrid.masterSocket, "--socket", hybrid.h.socket, "--state-file", hybrid.stateFile];

    const ok = await runAgent(args);
    expect(ok.code).toBe(0);
    const newPid = (await rawProc(hybrid.masterSocket)).workers[0]!;
    expect(newPid).not.toBe(oldPid);
    expect(ok.stdout).toContain(`${hybrid.masterSocket}: reloaded, worker ${newPid} serves (was ${oldPid})`);
    expect(ok.stdout).toContain(`${hybrid.stateFile}: 7 server(s) saved before the reload`);

    const good = await readFile(hybrid.h.configPath, "utf8");
    await appendFile(hybrid.h.configPath, "    bogus_keyword 1\n");
    const failed = await runAgent([...args, "--config", hybrid.h.configPath]);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain(`reports '[failed: 1]' in 'show proc', prompt "master[ReloadFailed]> "; worker ${newPid} still serves`);
    // 2.7+ gives its own reason in the reload's reply; 2.6 says nothing, so `haproxy -c` is asked.
    const version = (await rawProc(hybrid.masterSocket)).version;
    expect(failed.stderr).toContain(version >= 2.7 ? "HAProxy says:" : `'haproxy -c -f ${hybrid.h.configPath}' says:`);
    expect(failed.stderr).toContain("unknown keyword 'bogus_keyword' in 'backend' section");
    expect(await servingPid(hybrid.h)).toBe(newPid);

    const withoutConfig = await runAgent(args);
    expect(withoutConfig.code).toBe(1);
    // 2.6-3.0 count failures since the last success; 3.1+ only the latest reload's.
    expect(withoutConfig.stderr).toContain(version >= 3.1 ? "[failed: 1]" : "[failed: 2]");
    if (version >= 2.7) expect(withoutConfig.stderr).toContain("unknown keyword 'bogus_keyword' in 'backend' section");
    else expect(withoutConfig.stderr).toContain("HAProxy 2.6's master CLI does not say why");

    await writeFile(hybrid.h.configPath, good);
    expect((await runAgent(args)).code).toBe(0);

    const elsewhere = join(hybrid.h.dir, "other-state");
    const unreachable = await runAgent(["reload", "--master-socket", join(hybrid.h.dir, "absent.sock"), "--socket", hybrid.h.socket, "--state-file", elsewhere]);
    expect(unreachable.code).toBe(3);
    expect(unreachable.stderr).toContain("cannot connect to HAProxy");
    expect(existsSync(elsewhere)).toBe(false);
  });
});
