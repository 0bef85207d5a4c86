import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/*
 * Every process the demo starts. Each runs in a process group of its own, with its output in a
 * log file of the temp dir and no pipe to the driver: a Ctrl-C at the terminal reaches only the
 * driver, which then stops them in order, and `--keep` can leave them running after it exits.
 */

const STOP_GRACE_MS = 5_000;

export interface DemoProcess {
  name: string;
  pid: number;
  log: string;
}

interface Running extends DemoProcess {
  child: ChildProcess;
  exited: Promise<void>;
}

export class DemoStack {
  private readonly running: Running[] = [];
  private stopping: Promise<void> | null = null;

  constructor(readonly dir: string) {}

  start(name: string, command: string, args: string[], env: NodeJS.ProcessEnv = process.env): DemoProcess {
    const log = join(this.dir, `${name}.log`);
    const fd = openSync(log, "a");
    let child: ChildProcess;
    try {
      child = spawn(command, args, { detached: true, stdio: ["ignore", fd, fd], env });
    } finally {
      closeSync(fd);
    }
    // A program that cannot be spawned has no pid; its 'error' event would come later, unhandled.
    child.once("error", () => {});
    if (child.pid === undefined) throw new Error(`cannot start ${command}: is it installed and on the PATH?`);
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    const entry: Running = { name, pid: child.pid, log, child, exited };
    this.running.push(entry);
    return entry;
  }

  /** Whether `name` still runs: a process that died during the demo is a failure to report. */
  alive(name: string): boolean {
    const entry = this.running.find((process) => process.name === name);
    return entry !== undefined && entry.child.exitCode === null && entry.child.signalCode === null;
  }

  /** For `--keep`: lets the driver exit with everything running; returns the pid file to stop them by. */
  detach(): string {
    const pidFile = join(this.dir, "demo.pids");
    writeFileSync(pidFile, this.running.map((entry) => `${entry.pid}\n`).join(""));
    for (const entry of this.running) entry.child.unref();
    return pidFile;
  }

  /** Last started, first stopped: the agent before HAProxy, so it never sees HAProxy vanish. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      for (const entry of [...this.running].reverse()) await stopGroup(entry);
    })();
    return this.stopping;
  }
}

/** SIGTERM to the whole group (HAProxy's workers too), SIGKILL after a grace. */
async function stopGroup(entry: Running): Promise<void> {
  if (entry.child.exitCode !== null || entry.child.signalCode !== null) return;
  signalGroup(entry.pid, "SIGTERM");
  const timer = setTimeout(() => signalGroup(entry.pid, "SIGKILL"), STOP_GRACE_MS);
  await entry.exited;
  clearTimeout(timer);
  // A worker that outlived its master would hold the frontend port: none may stay behind.
  signalGroup(entry.pid, "SIGKILL");
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // The group is gone already.
  }
}
