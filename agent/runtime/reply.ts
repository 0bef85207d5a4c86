import type { CommandKind, RuntimeCommand } from "./commands.js";
import { isAddressChangeReport } from "./set-addr-reply.js";

/**
 * Why a change command failed, as far as its reply text tells. HAProxy gives no status
 * codes (severity prefixes are the same for success and failure), so the text decides.
 * `refused` also covers a reply hafleet does not recognise: only a known meaning is a success.
 */
export type FailureReason = "dynamic-servers-refused" | "no-such-server" | "no-such-backend" | "refused";

export type CommandReply =
  | { command: RuntimeCommand; ok: true; text: string }
  | { command: RuntimeCommand; ok: false; text: string; reason: FailureReason };

/*
 * Success by meaning, checked against every wording captured from 2.6 to 3.4
 * (test/fixtures/haproxy-<version>/runtime-replies-sequential.txt). Whatever else a version
 * prints is a failure carrying its text, so a new wording shows up as an error, never as a
 * change that silently did not happen.
 */
const SUCCESS: Record<CommandKind, (text: string) => boolean> = {
  "set-addr": isAddressChangeReport,
  // These print nothing when they succeed, in every version; any text is a refusal.
  "set-weight": (text) => text === "",
  "set-state": (text) => text === "",
  "enable-health": (text) => text === "",
  "add-server": (text) => text === "New server registered.",
  "del-server": (text) => text === "Server deleted.",
  // "Wait delay expired. ...", "Failed. ..." (3.4 adds the reason): the server stays.
  "wait-removable": (text) => text === "Done.",
  // Reads are judged by their parsers, which refuse anything they cannot read fully.
  "show-servers-state": () => true,
  "show-stat": () => true,
  "show-info": () => true,
  "show-backend": () => true,
};

export function classifyReply(command: RuntimeCommand, text: string): CommandReply {
  if (SUCCESS[command.kind](text)) return { command, ok: true, text };
  return { command, ok: false, text, reason: failureReason(text) };
}

/**
 * 2.6-3.3: `Backend must use a dynamic load balancing to support dynamic servers.`;
 * 3.4: `Backend does not support dynamic servers : backend 'X' uses a non dynamic load balancing method.`
 * Both say the backend itself can never take a dynamic server, which is what the caller acts on.
 */
const DYNAMIC_REFUSED = /^Backend\b[^\n]*\bdynamic servers\b/i;
const NO_SUCH_SERVER = /^(No such server\b|Can't find server\b)/i;
const NO_SUCH_BACKEND = /^(No such backend\b|Can't find backend\b)/i;

export function failureReason(text: string): FailureReason {
  if (DYNAMIC_REFUSED.test(text)) return "dynamic-servers-refused";
  if (NO_SUCH_SERVER.test(text)) return "no-such-server";
  if (NO_SUCH_BACKEND.test(text)) return "no-such-backend";
  return "refused";
}
