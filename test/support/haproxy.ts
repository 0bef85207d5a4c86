import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { instanceConfig } from "./haproxy-config.js";
import { sendRaw } from "./raw-socket.js";

/**
 * Real HAProxy processes for tests and the benchmark. Each instance owns a temp dir (config,
 * admin socket, master socket) and runs in the foreground (`-db`) as our child, so its handle
 * and exit are ours, and nothing is left behind even when a test fails.
 */

export interface HaproxyOptions {
  /** Backend (and any extra) sections, appended after global/defaults/frontend. */
  sections: string;
  /** The backend the test frontend sends to (default: none, frontend omitted). */
  defaultBackend?: string;
  /** Start in master-worker mode with a master socket too (`-W -S <dir>/master.sock`). */
  masterWorker?: boolean;
  /** `quiet`: no warning per server state change on stderr (benchmarks change 10,000). */
  quiet?: boolean;
  /** A second admin socket on TCP, 127.0.0.1 and a free port. */
  tcpAdmin?: boolean;
  /** Lines appended to the global section (e.g. `server-state-file PATH`), indented as given. */
  globalExtra?: string;
}

export interface RunningHaproxy {
  /** Temp dir owning everything of this instance. */
  dir: string;
  /** Admin unix socket path (level admin). */
  socket: string;
  masterSocket: string | null;
  configPath: string;
  /** A free 127.0.0.1 port when defaultBackend was given. */
  frontendPort: number | null;
  /** `127.0.0.1:PORT` of the TCP admin socket when tcpAdmin was asked for. */
  tcpSocket: string | null;
  /** The process we spawned: in master-worker mode, the master. */
  pid(): number;
  /** Raw reply text of one command (independent of product code; uses raw-socket.ts). */
  command(text: string): Promise<string>;
  /** `show servers state [backend]` parsed by header into records (column name -> raw value). */
  serversState(backend?: string): Promise<Array<Record<string, string>>>;
  /** Stop (SIGTERM, then SIGKILL after a grace) and start again with the same config and socket path; resolves when the socket answers. */
  restart(): Promise<void>;
  /** The pid that answers a fresh connection to the admin socket (the serving worker). */
  workerPid(): Promise<number>;
  /**
   * Replaces the serving worker the ways operators do, and resolves once a new pid answers the
   * admin socket: `master-cli` (`reload` on the master socket) and `sigusr2` (`systemctl reload`)
   * need masterWorker; `handover` starts a new process with `-x SOCKET -sf OLDPID` (no master).
   */
  reload(how: "master-cli" | "sigusr2" | "handover"): Promise<number>;
  /** The master's `show proc`: the current workers and the old ones still alive (masterWorker only). */
  processes(): Promise<{ workers: number[]; oldWorkers: number[] }>;
  /** Kill -9 without restarting (to simulate a crash). In master-worker mode the workers go too. */
  kill(): Promise<void>;
  /** Idempotent; removes the temp dir. */
  stop(): Promise<void>;
  /** HAProxy's own stdout+stderr (the last 64 KiB), for assertions and failure messages. */
  output(): string;
}

const HAPROXY_BIN = process.env["HAPROXY_BIN"] ?? "haproxy";
/** A HAProxy from deploy/haproxy-versions.sh runs through its own loader, which names the process. */
const HAPROXY_COMMS = new Set(["haproxy", "ld-linux-x86-64"]);
const READY_TIMEOUT_MS = 10_000;
const READY_POLL_MS = 50;
const STOP_GRACE_MS = 3_000;
const OUTPUT_LIMIT = 64 * 1024;

export async function startHaproxy(options: HaproxyOptions): Promise<RunningHaproxy> {
  const dir = await mkdtemp(join(tmpdir(), "hafleet-haproxy-"));
  ownedDirs.add(dir);
  installExitHook();
  try {
    const frontendPort = options.defaultBackend === undefined ? null : await freePort();
    const tcpSocket = options.tcpAdmin ? `127.0.0.1:${await freePort()}` : null;
    const paths = {
      dir,
      socket: join(dir, "admin.sock"),
      masterSocket: options.masterWorker ? join(dir, "master.sock") : null,
      configPath: join(dir, "haproxy.cfg"),
    };
    const frontend =
      frontendPort === null || options.defaultBackend === undefined
        ? undefined
        : { port: frontendPort, defaultBackend: options.defaultBackend };
    await writeFile(
      paths.configPath,
      instanceConfig({ adminSocket: paths.socket, sections: options.sections, quiet: options.quiet ?? false, tcpSocket, ...(frontend ? { frontend } : {}), ...(options.globalExtra ? { globalExtra: options.globalExtra } : {}) }),
    );
    const instance = new HaproxyInstance(paths, frontendPort, tcpSocket);
    try {
      await instance.launch();
    } catch (error) {
      await instance.stop();
      throw error;
    }
    return instance;
  } catch (error) {
    await removeDir(dir);
    throw error;
  }
}

let installed: Promise<boolean> | null = null;

/** Whether the haproxy binary is installed, for a clear failure message when it is not. */
export function isHaproxyInstalled(): Promise<boolean> {
  installed ??= new Promise<boolean>((resolve) => {
    const child = spawn(HAPROXY_BIN, ["-v"], { stdio: "ignore" });
    child.once("error", () => resolve(false));
    child.once("exit", (code) => resolve(code === 0));
  });
  return installed;
}

/**
 * The master CLI's `show proc`, read independently of the product's parser: pids by section.
 * A worker line is `<pid> worker ...`; `# workers` and `# old workers` head their sections.
 */
export function parseShowProc(text: string): { workers: number[]; oldWorkers: number[] } {
  const result = { workers: [] as number[], oldWorkers: [] as number[] };
  let section: "workers" | "oldWorkers" | null = null;
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) {
      section = /^# workers/.test(line) ? "workers" : /^# old workers/.test(line) ? "oldWorkers" : null;
      continue;
    }
    const match = /^(\d+)\s+worker\b/.exec(line.trim());
    if (match && section !== null) result[section].push(Number(match[1]));
  }
  return result;
}

/** Alive and not a zombie (an orphaned worker may linger as one until init reaps it). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
  return procStat(pid)?.state !== "Z";
}

/** `show servers state` text -> one record per server, columns named by the `#` header. */
export function parseServersState(text: string): Array<Record<string, string>> {
  const lines = text.split("\n").filter((line) => line.trim() !== "");
  const headerIndex = lines.findIndex((line) => line.startsWith("# "));
  const header = lines[headerIndex];
  if (lines[0]?.trim() !== "1" || header === undefined) {
    throw new Error(`unexpected 'show servers state' reply: ${JSON.stringify(text.slice(0, 200))}`);
  }
  const columns = header.slice(2).trim().split(/\s+/);
  return lines
    .slice(headerIndex + 1)
    .filter((line) => !line.startsWith("#"))
    .map((line) => {
      const fields = line.trim().split(/\s+/);
      const record: Record<string, string> = {};
      columns.forEach((column, index) => {
        record[column] = fields[index] ?? "";
      });
      return record;
    });
}

interface InstancePaths {
  dir: string;
  socket: string;
  masterSocket: string | null;
  configPath: string;
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  spawnError: Error | null;
}

class HaproxyInstance implements RunningHaproxy {
  readonly dir: string;
  readonly socket: string;
  readonly masterSocket: string | null;
  readonly configPath: string;
  private child: ChildProcess | null = null;
  private exited: Promise<Exit> = Promise.resolve({ code: null, signal: null, spawnError: null });
  private exit: Exit | null = null;
  private log = "";
  private stopping: Promise<void> | null = null;

  constructor(
    paths: InstancePaths,
    readonly frontendPort: number | null,
    readonly tcpSocket: string | null,
  ) {
    this.dir = paths.dir;
    this.socket = paths.socket;
    this.masterSocket = paths.masterSocket;
    this.configPath = paths.configPath;
  }

  pid(): number {
    const pid = this.child?.pid;
    if (pid === undefined || this.exit !== null) {
      throw new Error(`haproxy in ${this.dir} is not running`);
    }
    return pid;
  }

  command(text: string): Promise<string> {
    return sendRaw(this.socket, text);
  }

  async serversState(backend?: string): Promise<Array<Record<string, string>>> {
    const command = backend === undefined ? "show servers state" : `show servers state ${backend}`;
    // 10,000 servers make a ~1.5 MB reply; give it more than the default 5 s on a busy machine.
    return parseServersState(await sendRaw(this.socket, command, 30_000));
  }

  async workerPid(): Promise<number> {
    const pid = /^Pid: (\d+)$/m.exec(await sendRaw(this.socket, "show info", 2_000))?.[1];
    if (pid === undefined) throw new Error(`no Pid in 'show info' of ${this.socket}`);
    return Number(pid);
  }

  async reload(how: "master-cli" | "sigusr2" | "handover"): Promise<number> {
    const before = await this.workerPid();
    if (how === "handover") {
      if (this.masterSocket !== null) throw new Error("handover is the reload without master-worker");
      await this.handover(before);
    } else {
      if (this.masterSocket === null) throw new Error(`${how} needs masterWorker`);
      if (how === "master-cli") await sendRaw(this.masterSocket, "reload", 5_000).catch(() => "");
      else signal(this.pid(), "SIGUSR2");
    }
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      const now = await this.workerPid().catch(() => before);
      if (now !== before) return now;
      if (Date.now() > deadline) throw new Error(`no new worker within ${READY_TIMEOUT_MS} ms of a ${how} reload (still ${before}); output:\n${this.log}`);
      await sleep(10);
    }
  }

  async processes(): Promise<{ workers: number[]; oldWorkers: number[] }> {
    if (this.masterSocket === null) throw new Error("processes() needs masterWorker");
    return parseShowProc(await sendRaw(this.masterSocket, "show proc", 2_000));
  }

  /** The legacy reload: a new process takes the listeners over the old one's socket and tells it to finish. */
  private async handover(oldPid: number): Promise<void> {
    const old = this.runningChild();
    if (old === null) throw new Error(`haproxy in ${this.dir} is not running`);
    this.spawnChild(["-db", "-f", this.configPath, "-x", this.socket, "-sf", String(oldPid)]);
  }

  async restart(): Promise<void> {
    if (this.stopping) throw new Error(`haproxy in ${this.dir} was stopped; start a new one`);
    await this.terminate();
    await this.launch();
  }

  async kill(): Promise<void> {
    const child = this.runningChild();
    if (child === null) return;
    const tree = descendants(child.pid ?? -1);
    signal(child.pid ?? -1, "SIGKILL");
    for (const pid of tree) signal(pid, "SIGKILL");
    await this.exited;
    await waitUntil(() => tree.every((pid) => !isProcessAlive(pid)), STOP_GRACE_MS);
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.terminate();
      await removeDir(this.dir);
    })();
    return this.stopping;
  }

  output(): string {
    return this.log;
  }

  /** Spawns HAProxy and resolves once its sockets answer; rejects with its output otherwise. */
  async launch(): Promise<void> {
    const args = this.masterSocket === null ? ["-db"] : ["-W", "-db", "-S", this.masterSocket];
    args.push("-f", this.configPath);
    this.log = "";
    this.spawnChild(args);
    await this.waitReady();
  }

  /**
   * The process this instance now stands for. One replaced by a handover is no longer ours to
   * wait for, but stays in `live`, so the last-resort cleanup still kills it.
   */
  private spawnChild(args: string[]): void {
    this.exit = null;
    const child = spawn(HAPROXY_BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    live.add(child);
    child.stdout?.on("data", (chunk: Buffer) => this.append(chunk));
    child.stderr?.on("data", (chunk: Buffer) => this.append(chunk));
    this.exited = new Promise<Exit>((resolve) => {
      const done = (exit: Exit): void => {
        live.delete(child);
        if (this.child !== child) return resolve(exit);
        this.exit ??= exit;
        resolve(this.exit);
      };
      child.once("error", (spawnError) => done({ code: null, signal: null, spawnError }));
      child.once("exit", (code, signal) => done({ code, signal, spawnError: null }));
    });
  }

  private async waitReady(): Promise<void> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    let lastError = "";
    for (;;) {
      if (this.exit !== null) throw this.startError(`exited before answering (${describeExit(this.exit)})`);
      try {
        if (await this.answers()) return;
      } catch (error) {
        lastError = (error as Error).message;
      }
      if (Date.now() > deadline) {
        await this.terminate();
        throw this.startError(`did not answer within ${READY_TIMEOUT_MS} ms (last: ${lastError})`);
      }
      await sleep(READY_POLL_MS);
    }
  }

  /** The worker's admin socket, and in master-worker mode the master socket as well. */
  private async answers(): Promise<boolean> {
    const info = await sendRaw(this.socket, "show info", 1_000);
    if (!info.includes("Pid:")) return false;
    if (this.masterSocket === null) return true;
    return (await sendRaw(this.masterSocket, "show proc", 1_000)).includes("worker");
  }

  private startError(why: string): Error {
    if (this.exit?.spawnError) {
      return new Error(
        `cannot run ${JSON.stringify(HAPROXY_BIN)} (${this.exit.spawnError.message}): ` +
          "install HAProxy 2.6 (apt-get install haproxy) or set HAPROXY_BIN",
      );
    }
    const output = this.log.trim() === "" ? "(no output)" : this.log.trim();
    return new Error(`haproxy -f ${this.configPath} ${why}; its output:\n${output}`);
  }

  /** SIGTERM, SIGKILL after a grace; then make sure no worker outlived its master. */
  private async terminate(): Promise<void> {
    const child = this.runningChild();
    if (child === null) return;
    const tree = descendants(child.pid ?? -1);
    signal(child.pid ?? -1, "SIGTERM");
    const graceful = await Promise.race([this.exited.then(() => true), sleep(STOP_GRACE_MS).then(() => false)]);
    if (!graceful) signal(child.pid ?? -1, "SIGKILL");
    await this.exited;
    for (const pid of tree) {
      if (isProcessAlive(pid) && HAPROXY_COMMS.has(procStat(pid)?.comm ?? "")) signal(pid, "SIGKILL");
    }
  }

  private runningChild(): ChildProcess | null {
    return this.child !== null && this.exit === null ? this.child : null;
  }

  private append(chunk: Buffer): void {
    this.log += chunk.toString("utf8");
    if (this.log.length > OUTPUT_LIMIT) this.log = this.log.slice(-OUTPUT_LIMIT);
  }
}

/** Every HAProxy we spawned and have not seen exit: the last-resort cleanup kills these. */
const live = new Set<ChildProcess>();
/** Temp dirs not yet removed by stop(): the last-resort cleanup removes these. */
const ownedDirs = new Set<string>();

async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  ownedDirs.delete(dir);
}
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", killAllSync);
  // Without a handler these signals end Node without an 'exit' event. Others may listen too
  // (vitest does): only re-raise when we were the last listener, so their handling still runs.
  for (const name of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    const onSignal = (): void => {
      killAllSync();
      process.off(name, onSignal);
      if (process.listenerCount(name) === 0) process.kill(process.pid, name);
    };
    process.on(name, onSignal);
  }
}

function killAllSync(): void {
  for (const child of live) {
    const pid = child.pid;
    if (pid === undefined) continue;
    const tree = descendants(pid);
    signal(pid, "SIGKILL");
    for (const descendant of tree) signal(descendant, "SIGKILL");
  }
  live.clear();
  for (const dir of ownedDirs) rmSync(dir, { recursive: true, force: true });
  ownedDirs.clear();
}

function signal(pid: number, name: NodeJS.Signals): void {
  if (pid <= 0) return;
  try {
    process.kill(pid, name);
  } catch {
    // Already gone: that is what we wanted.
  }
}

/** Children, grandchildren... of pid, from /proc (synchronous so the 'exit' hook can use it). */
function descendants(pid: number): number[] {
  if (pid <= 0) return [];
  const byParent = new Map<number, number[]>();
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return []; // Not Linux: the master-worker stop path then relies on HAProxy alone.
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = procStat(Number(entry));
    if (stat === null) continue;
    const siblings = byParent.get(stat.ppid) ?? [];
    siblings.push(Number(entry));
    byParent.set(stat.ppid, siblings);
  }
  const found: number[] = [];
  const queue = [pid];
  for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
    for (const child of byParent.get(next) ?? []) {
      found.push(child);
      queue.push(child);
    }
  }
  return found;
}

interface ProcStat {
  comm: string;
  state: string;
  ppid: number;
}

function procStat(pid: number): ProcStat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // "pid (comm) state ppid ...": comm may itself hold spaces and parentheses.
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  const [state, ppid] = text.slice(close + 2).split(" ");
  if (open < 0 || close < 0 || state === undefined || ppid === undefined) return null;
  return { comm: text.slice(open + 1, close), state, ppid: Number(ppid) };
}

function describeExit(exit: Exit): string {
  if (exit.spawnError) return exit.spawnError.message;
  return exit.signal ? `signal ${exit.signal}` : `exit code ${exit.code}`;
}

export async function freePort(): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error("no port from listen(0)"))));
    });
  });
}

async function waitUntil(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
