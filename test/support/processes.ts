import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const AGENT_BIN = `${ROOT}dist/agent/cli/main.js`;
export const CONTROLLER_BIN = `${ROOT}dist/controller/cli/main.js`;

const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

export interface NodeProcess {
  child: ChildProcess;
  /** Everything written to stdout and stderr so far (pino JSON lines). */
  output(): string;
  /** JSON log lines whose `msg` is `msg`. */
  logs(msg: string): Array<Record<string, unknown>>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts a built hafleet program as an operator would; killed at exit whatever happens. */
export function startNode(script: string, args: string[]): NodeProcess {
  const child = spawn(process.execPath, [script, ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, HAFLEET_LOG_LEVEL: "info" } });
  running.add(child);
  let output = "";
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.once("exit", () => running.delete(child));
  return {
    child,
    output: () => output,
    logs: (msg) =>
      output
        // The last line may still be arriving: only whole lines are read.
        .slice(0, output.lastIndexOf("\n") + 1)
        .split("\n")
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line) as Record<string, unknown>)
        .filter((line) => line.msg === msg),
    kill: async (signal = "SIGTERM") => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      await exited;
    },
  };
}
