import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ConnectError, ReplyParseError, TimeoutError } from "../../agent/errors.js";
import { MasterCli, type MasterRequest } from "../../agent/hybrid/master-cli.js";
import { parseReloadReply, type ReloadReply } from "../../agent/hybrid/reload-reply.js";
import { parseMasterStatus, parseShowProc, servingWorkers, type ShowProc } from "../../agent/hybrid/show-proc.js";
import { caught, seededRandom } from "../support/helpers.js";

/*
 * Replies captured byte-exact from HAProxy 2.6.12's master CLI (`haproxy -W -S`), one instance
 * through: start (master-show-proc), a reload while a session held the previous worker
 * (old-workers), a reload with a bad keyword in the config (reload-failed), another
 * (reload-failed-twice), the config repaired and reloaded (recovered). The prompt-* files are
 * the replies to `prompt\nshow proc\n`; programs has a `program` section; on-admin-socket is
 * what a worker's admin socket answers to `show proc`.
 */
function fixture(name: string): string {
  return readFileSync(new URL(`../fixtures/haproxy-2.6/${name}.txt`, import.meta.url), "utf8");
}

const FRESH = fixture("master-show-proc");
const OLD_WORKERS = fixture("master-show-proc-old-workers");
const FAILED = fixture("master-show-proc-reload-failed");
const FAILED_TWICE = fixture("master-show-proc-reload-failed-twice");
const RECOVERED = fixture("master-show-proc-recovered");
const PROGRAMS = fixture("master-show-proc-programs");
const PROMPT = fixture("master-prompt-show-proc");
const PROMPT_FAILED = fixture("master-prompt-show-proc-reload-failed");
const ADMIN_SOCKET = fixture("master-show-proc-on-admin-socket");

const VERSION = "2.6.12-1+deb12u4";
const worker = (pid: number, reloads: number, uptimeSeconds: number) => ({ pid, type: "worker", relativePid: null, reloads, uptimeSeconds, version: VERSION });

function expectParseError(run: () => unknown, ...fragments: string[]): ReplyParseError {
  const error = caught(run);
  expect(error).toBeInstanceOf(ReplyParseError);
  const parseError = error as ReplyParseError;
  expect(parseError.code).toBe("HAFLEET_BAD_REPLY");
  for (const fragment of fragments) expect(parseError.message).toContain(fragment);
  return parseError;
}

describe("show proc (2.6 fixtures)", () => {
  it("reads a fresh master and its one worker", () => {
    expect(parseShowProc(FRESH)).toEqual<ShowProc>({
      master: { pid: 7955, reloads: 0, failedReloads: 0, uptimeSeconds: 0, version: VERSION },
      workers: [worker(7957, 0, 0)],
      oldWorkers: [],
      programs: [],
      oldPrograms: [],
    });
  });

  it("tells the new worker from the old one still finishing its connections", () => {
    const proc = parseShowProc(OLD_WORKERS);
    expect(proc.master).toEqual({ pid: 7955, reloads: 2, failedReloads: 0, uptimeSeconds: 2, version: VERSION });
    expect(proc.workers).toEqual([worker(7963, 0, 0)]);
    expect(proc.oldWorkers).toEqual([worker(7960, 1, 2)]);
  });

  it("reads the failed-reload counter: it counts failures since the last success", () => {
    const failed = parseShowProc(FAILED);
    expect(failed.master).toMatchObject({ pid: 7955, reloads: 3, failedReloads: 1 });
    // The worker stays current, and its own counter grows with the failed reload too.
    expect(failed.workers).toEqual([worker(7963, 1, 0)]);
    expect(failed.oldWorkers).toEqual([]);
    expect(parseShowProc(FAILED_TWICE).master).toMatchObject({ reloads: 4, failedReloads: 2 });
    expect(parseShowProc(FAILED_TWICE).workers).toEqual([worker(7963, 2, 0)]);
    // 2.6 resets it on success.
    expect(parseShowProc(RECOVERED).master).toMatchObject({ reloads: 5, failedReloads: 0 });
    expect(parseShowProc(RECOVERED).workers).toEqual([worker(7970, 0, 0)]);
  });

  it("reads programs, whose version is '-'", () => {
    const proc = parseShowProc(PROGRAMS);
    expect(proc.programs).toEqual([{ pid: 8420, type: "sleeper", relativePid: null, reloads: 0, uptimeSeconds: 1, version: null }]);
    expect(proc.workers).toEqual([worker(8421, 0, 0)]);
  });

  it("finds columns by name, whatever their order", () => {
    const swap = (line: string): string => {
      const values = line.match(/\d+ \[failed: \d+\]|\S+/g) ?? [];
      return [values[0], values[1], values[2], values[4], values[3]].map((value) => (value ?? "").padEnd(15)).join(" ");
    };
    const lines = FRESH.split("\n");
    const reordered = [swap(lines[0]!.slice(1)).replace(/^/, "#"), swap(lines[1]!), lines[2], swap(lines[3]!), ...lines.slice(4)].join("\n");
    expect(reordered.split("\n")[0]).toMatch(/^#<PID> +<type> +<reloads> +<version> +<uptime>/);
    expect(parseShowProc(reordered)).toEqual(parseShowProc(FRESH));
  });

  it("reads values that overflow their 15-character padding", () => {
    const text = FRESH.replace(/^7955 .*$/m, "7955            master          12345 [failed: 12345] 1000d23h59m59s 2.6.12-1+deb12u4");
    expect(parseShowProc(text).master).toEqual({ pid: 7955, reloads: 12345, failedReloads: 12345, uptimeSeconds: 1000 * 86400 + 23 * 3600 + 59 * 60 + 59, version: VERSION });
  });

  it("reads the 2.4 layout: a relative PID column, [was: N] for old workers, no failed counter", () => {
    // As 2.4's mworker.c prints it (`%-15u %-15s %-15u %-15d %-15s %-15s`).
    const row = (...values: string[]) => values.map((value) => value.padEnd(15)).join(" ");
    const text = [
      "#" + ["<PID>".padEnd(14), ...["<type>", "<relative PID>", "<reloads>", "<uptime>", "<version>"].map((name) => name.padEnd(15))].join(" "),
      row("1000", "master", "0", "2", "0d00h05m00s", "2.4.22"),
      "# workers",
      row("2000", "worker", "1", "0", "0d00h00m10s", "2.4.22"),
      "# old workers",
      row("1500", "worker", "[was: 1]", "1", "0d00h04m00s", "2.4.22"),
      "# programs",
      "",
      "",
    ].join("\n");
    const proc = parseShowProc(text);
    expect(proc.master).toEqual({ pid: 1000, reloads: 2, failedReloads: null, uptimeSeconds: 300, version: "2.4.22" });
    expect(proc.workers).toEqual([{ pid: 2000, type: "worker", relativePid: 1, reloads: 0, uptimeSeconds: 10, version: "2.4.22" }]);
    expect(proc.oldWorkers).toEqual([{ pid: 1500, type: "worker", relativePid: 1, reloads: 1, uptimeSeconds: 240, version: "2.4.22" }]);
  });

  it("refuses what an admin socket answers: pointed at the wrong socket", () => {
    expectParseError(() => parseShowProc(ADMIN_SOCKET), "'show proc'", "line 1", "header of the master CLI", "Unknown command");
  });

  it("refuses every reply cut short, even at a line's end", () => {
    for (let end = 0; end < FAILED.length; end++) {
      expectParseError(() => parseShowProc(FAILED.slice(0, end)), "'show proc'");
    }
  });

  const broken: Array<[string, string, string]> = [
    ["no '# workers'", FRESH.replace("# workers\n7957            worker          0               0d00h00m00s     2.6.12-1+deb12u4\n", ""), "no '# workers' section"],
    ["an unknown section", FRESH.replace("# programs", "# helpers"), 'unknown section "# helpers"'],
    ["a section twice", FRESH.replace("# programs", "# workers"), "appears twice"],
    ["a worker among programs", PROGRAMS.replace("8420            sleeper", "8420            worker "), "type \"worker\" in the '# programs' section"],
    ["a program among workers", FRESH.replace("7957            worker", "7957            sleeper"), "type \"sleeper\" in the '# workers' section"],
    ["a process before any section", FRESH.replace("# workers\n", ""), "before any '# workers' section"],
    ["a worker first", FRESH.replace("master  ", "worker  "), 'got type "worker"'],
    ["a value missing", FRESH.replace("0d00h00m00s     2.6.12-1+deb12u4\n# programs", "2.6.12-1+deb12u4\n# programs"), "expected 5 values as in the header, got 4"],
    ["a value too many", FRESH.replace("0d00h00m00s     2.6.12", "0d00h00m00s x   2.6.12"), "got 6"],
    ["a bad uptime", FRESH.replace("0d00h00m00s     2.6.12-1+deb12u4\n# programs", "0d00h00m0s      2.6.12-1+deb12u4\n# programs"), 'uptime: expected like 0d00h01m05s, got "0d00h00m0s"'],
    ["a bad pid", FRESH.replace("7957 ", "79x7 "), 'PID: expected a non-negative integer, got "79x7"'],
    ["a bad master counter", FRESH.replace("0 [failed: 0]", "0 [failed:-1]"), "got 6"],
    ["a bad master reloads", FRESH.replace("0 [failed: 0]", "x            "), "reloads: expected 'N' or 'N [failed: M]'"],
    ["a header without <version>", FRESH.replace("<version>", "         "), 'header has no "<version>" column'],
    ["a header with a name twice", FRESH.replace("<uptime>", "<reloads>"), 'column "reloads" appears twice'],
    ["a header with stray text", FRESH.replace("<type>  ", "<type> x"), "text between the header's <names>"],
    ["two replies run together", FRESH + FRESH, "text after the blank line"],
    ["an empty reply", "", "reply cut short"],
    ["a blank reply", "\n\n", "header of the master CLI"],
  ];
  it.each(broken)("refuses %s", (_name, text, fragment) => {
    expectParseError(() => parseShowProc(text), fragment);
  });

  it("throws only ReplyParseError on random damage (seeded)", () => {
    const random = seededRandom(20261017);
    const alphabet = "0123456789 #<>[]:-\nabcdefghijklmnopqrstuvwxyz";
    for (let round = 0; round < 3000; round++) {
      const source = [FRESH, OLD_WORKERS, FAILED, PROGRAMS][round % 4]!;
      const chars = [...source];
      const edits = 1 + Math.floor(random() * 3);
      for (let edit = 0; edit < edits; edit++) {
        const at = Math.floor(random() * chars.length);
        const replacement = alphabet[Math.floor(random() * alphabet.length)]!;
        if (random() < 0.3) chars.splice(at, 1);
        else chars[at] = replacement;
      }
      const text = chars.join("");
      try {
        const proc = parseShowProc(text);
        for (const entry of [proc.master, ...proc.workers, ...proc.oldWorkers, ...proc.programs]) expect(Number.isSafeInteger(entry.pid)).toBe(true);
      } catch (error) {
        if (!(error instanceof ReplyParseError)) throw new Error(`seed round ${round}: ${String(error)} on ${JSON.stringify(text)}`);
      }
    }
  });
});

function versionFixture(version: string, name: string): string {
  return readFileSync(new URL(`../fixtures/haproxy-${version}/${name}`, import.meta.url), "utf8");
}

const VERSIONS = ["2.6", "2.8", "3.0", "3.2", "3.4"] as const;

/*
 * One HAProxy per version through the same cycle (reload-cycle-*.txt): started, reloaded,
 * reloaded with a bad keyword, again, repaired and reloaded. 2.6 answers `reload` with nothing.
 */
describe.each(VERSIONS)("HAProxy %s: the reload's own verdict", (version) => {
  const reply = (name: string) => parseReloadReply(versionFixture(version, name));
  const verdicts = version === "2.6";

  it(verdicts ? "is none: 2.6 answers nothing, success or failure" : "is success, with the startup log", () => {
    const success = reply("reload-cycle-1-reload-reply-success.txt");
    if (verdicts) return expect(success).toEqual({ kind: "no-verdict" });
    expect(success.kind).toBe("succeeded");
    expect(success).toMatchObject({ log: expect.stringContaining("Loading success.") });
  });

  it(verdicts ? "is none for a failed reload too" : "is failure, with HAProxy's [ALERT] lines as the reason", () => {
    for (const name of ["reload-cycle-2-reload-reply-failure.txt", "reload-cycle-3-reload-reply-failure-again.txt"]) {
      const failure = reply(name);
      if (verdicts) {
        expect(failure).toEqual({ kind: "no-verdict" });
        continue;
      }
      expect(failure.kind).toBe("failed");
      const reason = failure.kind === "failed" ? failure.reason.split("\n") : [];
      expect(reason[0]).toMatch(/^\[ALERT\] +\(\d+\) : config : parsing \[<DIR>\/haproxy\.cfg:18\] : unknown keyword 'bogus_keyword' in 'backend' section$/);
      expect(reason.every((line) => line.startsWith("[ALERT]"))).toBe(true);
    }
  });
});

describe("parseReloadReply", () => {
  it.each(["3.2", "3.4"])("reads 3.1+'s 'Another reload is still in progress.' (%s) as busy: nothing was tried", (version) => {
    expect(parseReloadReply(versionFixture(version, "reload-reply-busy.txt"))).toEqual({ kind: "busy", log: "Another reload is still in progress." });
  });

  it.each<[string, string, ReloadReply["kind"]]>([
    ["a status without a log", "Success=1\n--", "succeeded"],
    ["a failure without [ALERT] lines: the log is the reason", "Success=0\n--\n[WARNING]  (9) : Failed to load worker (10) exited with code 1 (Exit)\n", "failed"],
    ["a failure whose alerts mention a reload in progress: still a failure", "Success=0\n--\n[ALERT]    (9) : config : reload in progress of 'x'\n", "failed"],
    ["busy, worded otherwise", "Success=0\n--\nA reload is in progress, try later.\n", "busy"],
  ])("reads %s", (_name, text, kind) => {
    expect(parseReloadReply(text).kind).toBe(kind);
  });

  it("keeps an alert's continuation lines in the reason", () => {
    const text = "Success=0\n--\n[NOTICE]   (9) : haproxy version is 3.4.7-1\n[ALERT]    (9) : config : something\n   | with details\n[WARNING]  (9) : Loading failure!\n";
    expect(parseReloadReply(text)).toMatchObject({ kind: "failed", reason: "[ALERT]    (9) : config : something\n   | with details" });
  });

  it.each([
    ["the admin socket's answer", ADMIN_SOCKET],
    ["a permission refusal", "Permission denied\n"],
    ["a status that is neither 0 nor 1", "Success=2\n--\n"],
    ["a status without its separator", "Success=1\nLoading success.\n"],
    ["a status not at the start", "\nSuccess=1\n--\n"],
  ])("refuses %s: nothing was reloaded", (_name, text) => {
    expectParseError(() => parseReloadReply(text), "'reload'");
  });
});

describe.each(VERSIONS)("HAProxy %s: show proc through a reload cycle", (version) => {
  const proc = (name: string) => parseShowProc(versionFixture(version, name));
  const fresh = proc("reload-cycle-0-show-proc-fresh.txt");
  const reloaded = proc("reload-cycle-1-show-proc-reloaded.txt");
  const failed = proc("reload-cycle-2-show-proc-failed.txt");
  const failedAgain = proc("reload-cycle-3-show-proc-failed-again.txt");
  const recovered = proc("reload-cycle-4-show-proc-recovered.txt");
  const movesToOld = version >= "3.1";

  it("reads every state, with or without '# programs'", () => {
    for (const entry of [fresh, reloaded, failed, failedAgain, recovered]) {
      // 2.8's master-CLI fixtures are 3.0.11's, composed (test/fixtures/haproxy-2.8/VERSION).
      expect(entry.master.version.startsWith(version === "2.8" ? "3.0" : version)).toBe(true);
      expect(entry.programs).toEqual([]);
    }
    expect(servingWorkers(fresh)).toHaveLength(1);
    expect(servingWorkers(reloaded)[0]!.pid).not.toBe(servingWorkers(fresh)[0]!.pid);
  });

  it(movesToOld ? "lists the worker that still serves a failed reload under '# old workers'" : "keeps the worker that still serves a failed reload under '# workers'", () => {
    const serving = servingWorkers(reloaded)[0]!.pid;
    for (const entry of [failed, failedAgain]) {
      expect(entry.workers.map((worker) => worker.pid)).toEqual(movesToOld ? [] : [serving]);
      expect(entry.oldWorkers.map((worker) => worker.pid)).toEqual(movesToOld ? [serving] : []);
      expect(servingWorkers(entry).map((worker) => worker.pid)).toEqual([serving]);
    }
  });

  it(movesToOld ? "counts only the latest reload's failure" : "counts failures since the last success", () => {
    expect([fresh, reloaded, failed, failedAgain, recovered].map((entry) => [entry.master.reloads, entry.master.failedReloads])).toEqual([
      [0, 0],
      [1, 0],
      [2, 1],
      [3, movesToOld ? 1 : 2],
      [4, 0],
    ]);
  });

  it("shows the failure in the prompt too", () => {
    const status = parseMasterStatus(versionFixture(version, "reload-cycle-2-prompt-show-proc-failed.txt"));
    expect(status.prompt).toEqual({ text: "master[ReloadFailed]> ", reloadFailed: true });
    expect(status.proc).toEqual(failed);
  });
});

describe("servingWorkers", () => {
  it("takes, when no worker is current, the old workers replaced last (fewest reloads)", () => {
    const entry = (pid: number, reloads: number) => ({ pid, type: "worker", relativePid: null, reloads, uptimeSeconds: 0, version: "3.2.26-1" });
    const base = parseShowProc(FRESH);
    expect(servingWorkers({ ...base, workers: [], oldWorkers: [entry(10, 3), entry(11, 1), entry(12, 2)] }).map((worker) => worker.pid)).toEqual([11]);
    expect(servingWorkers({ ...base, workers: [], oldWorkers: [] })).toEqual([]);
    expect(servingWorkers({ ...base, workers: [entry(20, 0)], oldWorkers: [entry(11, 1)] }).map((worker) => worker.pid)).toEqual([20]);
  });
});

describe("the master's prompt", () => {
  it("is 'master> ' while the last reload went well", () => {
    const status = parseMasterStatus(PROMPT);
    expect(status.prompt).toEqual({ text: "master> ", reloadFailed: false });
    expect(status.proc).toEqual(parseShowProc(FRESH));
  });

  it("is 'master[ReloadFailed]> ' after a failed reload, in step with [failed: N]", () => {
    const status = parseMasterStatus(PROMPT_FAILED);
    expect(status.prompt).toEqual({ text: "master[ReloadFailed]> ", reloadFailed: true });
    expect(status.proc).toEqual(parseShowProc(FAILED));
  });

  it("reads the prompt that follows the reply, which is the state after the command", () => {
    const text = PROMPT_FAILED.replace(/^master\[ReloadFailed\]> /, "master> ");
    expect(parseMasterStatus(text).prompt.reloadFailed).toBe(true);
  });

  const cut: Array<[string, string]> = [
    ["no prompt at the start", PROMPT.slice("master> ".length)],
    ["no prompt at the end", PROMPT.slice(0, -"master> ".length)],
    ["the end cut inside the prompt", PROMPT.slice(0, -2)],
    ["only a prompt", "master> "],
    ["a worker's prompt", PROMPT.replaceAll("master> ", "1234> ")],
    ["the admin socket's prompt", `> ${FRESH}> `],
  ];
  it.each(cut)("refuses %s", (_name, text) => {
    expectParseError(() => parseMasterStatus(text), "'show proc'");
  });

  it("refuses a prompt-framed reply whose body is cut", () => {
    const text = PROMPT.replace("# programs\n\nmaster> ", "# programs\nmaster> ");
    expectParseError(() => parseMasterStatus(text), "reply cut short");
  });
});

/** A stand-in master CLI: records each request, answers only once the client half-closed. */
interface FakeMaster {
  server: Server;
  address: string;
  requests: string[];
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function fakeMaster(answer: (request: string, socket: Socket) => void, listenOn: "unix" | "tcp" = "unix"): Promise<FakeMaster> {
  const dir = await mkdtemp(join(tmpdir(), "hafleet-master-"));
  const requests: string[] = [];
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    let request = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => (request += chunk));
    socket.on("end", () => {
      requests.push(request);
      answer(request, socket);
    });
    socket.on("error", () => undefined);
  });
  const address = await new Promise<string>((resolve) => {
    if (listenOn === "unix") server.listen(join(dir, "master.sock"), () => resolve(join(dir, "master.sock")));
    else server.listen(0, "127.0.0.1", () => resolve(`127.0.0.1:${(server.address() as { port: number }).port}`));
  });
  cleanups.push(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });
  return { server, address, requests };
}

function cliFor(address: string, timeoutMs = 1_000): MasterCli {
  const parsed = address.startsWith("/") ? { kind: "unix" as const, path: address } : { kind: "tcp" as const, host: "127.0.0.1", port: Number(address.split(":")[1]) };
  return new MasterCli(parsed, { timeoutMs });
}

describe("MasterCli", () => {
  it("writes the fixed request, half-closes, and reads until the master closes", async () => {
    const master = await fakeMaster((_request, socket) => socket.end(PROMPT_FAILED));
    const status = await cliFor(master.address).status();
    expect(master.requests).toEqual(["prompt\nshow proc\n"]);
    expect(status.prompt.reloadFailed).toBe(true);
    expect(status.proc.workers.map((entry) => entry.pid)).toEqual([7963]);
  });

  it("reads a reply that comes in many small pieces", async () => {
    const master = await fakeMaster((_request, socket) => {
      const pieces = OLD_WORKERS.match(/[\s\S]{1,7}/g) ?? [];
      const next = (): void => {
        const piece = pieces.shift();
        if (piece === undefined) socket.end();
        else socket.write(piece, () => setImmediate(next));
      };
      next();
    });
    expect(await cliFor(master.address).showProc()).toEqual(parseShowProc(OLD_WORKERS));
    expect(master.requests).toEqual(["show proc\n"]);
  });

  it("works on a TCP master socket too", async () => {
    const master = await fakeMaster((_request, socket) => socket.end(FRESH), "tcp");
    expect((await cliFor(master.address).showProc()).master.pid).toBe(7955);
  });

  it("returns the reload's verdict: none from 2.6's empty answer, HAProxy's from 2.7+; other text is a refusal", async () => {
    const answers = ["", versionFixture("3.2", "reload-cycle-2-reload-reply-failure.txt"), ADMIN_SOCKET];
    const master = await fakeMaster((_request, socket) => socket.end(answers.shift() ?? ""));
    await expect(cliFor(master.address).reload()).resolves.toEqual({ kind: "no-verdict" });
    await expect(cliFor(master.address).reload()).resolves.toMatchObject({ kind: "failed", reason: expect.stringContaining("unknown keyword 'bogus_keyword'") });
    const refused = await cliFor(master.address).reload().catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(ReplyParseError);
    expect((refused as Error).message).toContain("expected an empty reply or 'Success=0|1'");
    expect(master.requests).toEqual(["reload\n", "reload\n", "reload\n"]);
  });

  it("gives 'reload' a timeout of its own: 2.7+ answers only once the new worker has loaded", async () => {
    const master = await fakeMaster((_request, socket) => setTimeout(() => socket.end("Success=1\n--\n[NOTICE]   (1) : Loading success.\n"), 300));
    const cli = cliFor(master.address, 100);
    await expect(cli.reload()).rejects.toBeInstanceOf(TimeoutError);
    await expect(cli.reload(2_000)).resolves.toMatchObject({ kind: "succeeded" });
  });

  it("times out, never returning a partial reply as complete", async () => {
    const master = await fakeMaster((_request, socket) => socket.write(FRESH.slice(0, 40)));
    const started = Date.now();
    const error = await cliFor(master.address, 200).showProc().catch((caughtError: unknown) => caughtError);
    expect(error).toBeInstanceOf(TimeoutError);
    expect((error as TimeoutError).message).toContain("master CLI 'show proc'");
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it("reports a master that is not there as a connect error", async () => {
    const dir = await mkdtemp(join(tmpdir(), "hafleet-master-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const error = await cliFor(join(dir, "absent.sock")).showProc().catch((caughtError: unknown) => caughtError);
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe("HAFLEET_CONNECT");
  });

  it("sends nothing but its fixed requests", async () => {
    const master = await fakeMaster((_request, socket) => socket.end(""));
    const cli = cliFor(master.address);
    for (const smuggled of ["reload\nshow proc", "@!1 show info", "toString", "__proto__", "show proc;reload"]) {
      await expect(cli.request(smuggled as MasterRequest)).rejects.toThrow("refusing to send an unknown master CLI request");
    }
    expect(master.requests).toEqual([]);
  });
});
