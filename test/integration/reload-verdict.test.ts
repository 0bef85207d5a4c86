import { appendFile, readFile, writeFile } from "node:fs/promises";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { MasterCli } from "../../agent/hybrid/master-cli.js";
import type { ReloadReply } from "../../agent/hybrid/reload-reply.js";
import { ReloadFailedError, Reloader, type MasterControl } from "../../agent/hybrid/reloader.js";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";
import { silentLogger } from "../support/apply.js";
import { isHaproxyInstalled, startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";
import { sendRaw } from "../support/raw-socket.js";

/*
 * The reload's verdict on the HAProxy this run uses (HAPROXY_BIN): 2.6 answers `reload` with
 * nothing and only `show proc` tells; 2.7+ answers Success=0|1 with the startup log; 3.1+ may
 * answer that another reload is in progress, and lists the worker that survives a failed reload
 * under `# old workers`. The same Reloader must reach the same verdicts on all of them.
 * Outcomes are checked on HAProxy's own words through the harness's raw socket code.
 */

let haproxy: RunningHaproxy | undefined;

beforeAll(async () => {
  expect(await isHaproxyInstalled(), "haproxy must be installed (apt-get install haproxy) or HAPROXY_BIN set").toBe(true);
});

afterEach(async () => {
  await haproxy?.stop();
  haproxy = undefined;
});

/** Major.minor of the running HAProxy, from the master's own `show proc` line. */
async function versionOf(masterSocket: string): Promise<number> {
  const match = /^\d+\s+master\s+.*\s(\d+)\.(\d+)[.-]/m.exec(await sendRaw(masterSocket, "show proc"));
  if (!match) throw new Error("no version in show proc");
  return Number(match[1]) + Number(match[2]) / 10;
}

/** Records what HAProxy answered to each `reload`, so a test can tell which path gave the verdict. */
function recording(master: MasterCli): { control: MasterControl; replies: Array<ReloadReply["kind"]> } {
  const replies: Array<ReloadReply["kind"]> = [];
  const control: MasterControl = {
    name: master.name,
    status: () => master.status(),
    reload: async (timeoutMs?: number) => {
      const reply = await master.reload(timeoutMs);
      replies.push(reply.kind);
      return reply;
    },
  };
  return { control, replies };
}

describe("a reload's verdict and its reason, on this version", () => {
  it("reloads, fails with HAProxy's own reason while the old worker serves on, then reloads once repaired", async () => {
    const h = (haproxy = await startHaproxy({ sections: templateBackend("be_app", { slots: 2 }), masterWorker: true }));
    const version = await versionOf(h.masterSocket!);
    const { control, replies } = recording(new MasterCli(parseSocketAddress(h.masterSocket!)));
    const reloader = new Reloader(control, { minIntervalMs: 0, logger: silentLogger });
    const first = await h.workerPid();

    const ok = await reloader.reload();
    expect(ok.previousWorkerPids).toEqual([first]);
    expect(ok.workerPid).not.toBe(first);
    expect(await servedBy(h, ok.workerPid)).toBe(ok.workerPid);

    const good = await readFile(h.configPath, "utf8");
    await appendFile(h.configPath, "    bogus_keyword 1\n");
    for (let attempt = 1; attempt <= 2; attempt++) {
      const error = (await reloader.reload().catch((caught: unknown) => caught)) as ReloadFailedError;
      expect(error).toBeInstanceOf(ReloadFailedError);
      expect(error.servingPids).toEqual([ok.workerPid]);
      expect(reloader.workerPid).toBe(ok.workerPid);
      if (version >= 2.7) {
        // HAProxy's own [ALERT] lines: no `haproxy -c` needed to say why.
        expect(error.reason).toMatch(/^\[ALERT\] .*unknown keyword 'bogus_keyword' in 'backend' section/);
        expect(error.message).toContain("HAProxy says:\n[ALERT]");
      } else {
        expect(error.reason).toBeNull();
      }
      expect(await h.workerPid()).toBe(ok.workerPid);
    }
    // 3.1+ lists the worker that still serves as an old one; the Reloader must not conclude none serves.
    const processes = await h.processes();
    expect([...processes.workers, ...processes.oldWorkers]).toContain(ok.workerPid);
    if (version >= 3.1) expect(processes.workers).toEqual([]);

    await writeFile(h.configPath, good);
    const repaired = await reloader.reload();
    expect(repaired.previousWorkerPids).toEqual([ok.workerPid]);
    expect(await servedBy(h, repaired.workerPid)).toBe(repaired.workerPid);
    expect((await h.processes()).workers).toEqual([repaired.workerPid]);
    expect(replies).toEqual(version >= 2.7 ? ["succeeded", "failed", "failed", "succeeded"] : ["no-verdict", "no-verdict", "no-verdict", "no-verdict"]);
  });

  it("sends again, and succeeds, when another reload is still loading its worker (3.1+: 'Another reload is still in progress')", async (context) => {
    // 40,000 servers: a worker takes ~0.6 s to load them, long enough to send ours meanwhile.
    const sections = Array.from({ length: 200 }, (_, index) => templateBackend(`be_${index}`, { slots: 200 })).join("\n");
    const h = (haproxy = await startHaproxy({ sections, quiet: true, masterWorker: true }));
    // Before 3.1 the master re-executes itself during a reload and takes no connection: nothing to answer busy.
    if ((await versionOf(h.masterSocket!)) < 3.1) return context.skip();
    const { control, replies } = recording(new MasterCli(parseSocketAddress(h.masterSocket!)));
    const reloader = new Reloader(control, { minIntervalMs: 0, timeoutMs: 20_000, logger: silentLogger });

    // An operator's reload, still loading its worker when ours is sent.
    // Its own reply is HAProxy's business (3.4 sometimes closes that connection without one).
    const theirs = sendRaw(h.masterSocket!, "reload", 20_000).catch(() => "");
    await new Promise((resolve) => setTimeout(resolve, 150));
    const ours = await reloader.reload();
    await theirs;
    expect(replies[0]).toBe("busy");
    expect(replies.at(-1)).toBe("succeeded");
    expect(await servedBy(h, ours.workerPid)).toBe(ours.workerPid);
    // Theirs, then ours: two reloads, no more.
    expect(/^\d+\s+master\s+(\d+)/m.exec(await sendRaw(h.masterSocket!, "show proc"))?.[1]).toBe("2");
  }, 60_000);
});

/** The pid answering new admin connections once it is `expected`, or the last one seen after 3 s. */
async function servedBy(h: RunningHaproxy, expected: number): Promise<number> {
  const deadline = Date.now() + 3_000;
  for (;;) {
    const pid = await h.workerPid();
    if (pid === expected || Date.now() > deadline) return pid;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
