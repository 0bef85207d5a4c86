import { pino, type Logger } from "pino";
import pretty from "pino-pretty";

/**
 * Structured logs on stderr (stdout carries the command's own output). JSON lines for
 * machines; pretty only when a person is watching a terminal. Field names are shared across
 * the project: `agent`, `backend`, `server`, `version`, `socket`.
 */
export function createLogger(level = process.env.HAFLEET_LOG_LEVEL ?? "info"): Logger {
  const options = { level, base: { pid: process.pid } };
  if (process.stderr.isTTY) return pino(options, pretty({ destination: 2, sync: true }));
  return pino(options, pino.destination({ fd: 2, sync: true }));
}
