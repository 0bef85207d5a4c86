import { spawn } from "node:child_process";
import { AGENT_BIN, CONTROLLER_BIN } from "./processes.js";

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built `hafleet-agent` as an operator would; `npm test` builds it first. */
export function runAgent(args: string[], stdin?: string): Promise<CliResult> {
  return runProgram(AGENT_BIN, args, stdin);
}

/** Runs the built `hafleet` (the controller and fleet commands). */
export function runHafleet(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return runProgram(CONTROLLER_BIN, args, undefined, env);
}

function runProgram(script: string, args: string[], stdin?: string, env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, HAFLEET_LOG_LEVEL: "warn", ...env } });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(stdin ?? "");
  });
}
