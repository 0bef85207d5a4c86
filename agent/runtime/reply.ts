import type { CommandKind, RuntimeCommand } from "./commands.js";

/**
 * Why a change command failed, as far as its reply text tells. HAProxy gives no status
 * codes (severity prefixes are the same for success and failure), so the text decides.
 */
export type FailureReason = "dynamic-servers-refused" | "no-such-server" | "no-such-backend" | "refused";

export type CommandReply =
  | { command: RuntimeCommand; ok: true; text: string }
  | { command: RuntimeCommand; ok: false; text: string; reason: FailureReason };

const SUCCESS: Record<CommandKind, (text: string) => boolean> = {
  "set-addr": (text) => text.startsWith("IP changed from ") || text.startsWith("no need to change the addr"),
  "set-weight": (text) => text === "",
  "set-state": (text) => text === "",
  "enable-health": (text) => text === "",
  "add-server": (text) => text === "New server registered.",
  "del-server": (text) => text === "Server deleted.",
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

function failureReason(text: string): FailureReason {
  if (text.startsWith("Backend must use a dynamic load balancing")) return "dynamic-servers-refused";
  if (text.startsWith("No such server")) return "no-such-server";
  if (text.startsWith("No such backend") || text.startsWith("Can't find backend")) return "no-such-backend";
  return "refused";
}
