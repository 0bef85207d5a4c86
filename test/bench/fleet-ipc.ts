import type { ChildProcess } from "node:child_process";
import type { FleetCommand, FleetReport } from "./fleet-agents.js";

/** The fleet child's (fleet-agents.ts) next report of `type`; rejects if it fails, exits or stays silent past `timeoutMs`. */
export function nextReport<K extends FleetReport["type"]>(child: ChildProcess, type: K, timeoutMs: number): Promise<Extract<FleetReport, { type: K }>> {
  return new Promise((resolve, reject) => {
    const finish = (error: Error | null, report?: Extract<FleetReport, { type: K }>): void => {
      clearTimeout(timer);
      child.off("message", onMessage);
      child.off("exit", onExit);
      if (error !== null) reject(error);
      else resolve(report!);
    };
    const onMessage = (report: FleetReport): void => {
      if (report.type === type) finish(null, report as Extract<FleetReport, { type: K }>);
      else if (report.type === "failed") finish(new Error(`agent child ${child.pid}: ${report.error}`));
    };
    const onExit = (code: number | null, signal: string | null): void => finish(new Error(`agent child ${child.pid} exited (${signal ?? code}) before '${type}'`));
    const timer = setTimeout(() => finish(new Error(`agent child ${child.pid}: no '${type}' within ${timeoutMs} ms`)), timeoutMs);
    child.on("message", onMessage);
    child.once("exit", onExit);
  });
}

/** A command to the fleet child, unless it is gone. */
export function command(child: ChildProcess, message: FleetCommand): void {
  if (child.connected) child.send(message);
}
