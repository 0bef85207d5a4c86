import { ReplyParseError } from "../errors.js";
import { quote } from "../runtime/parsers/fields.js";
import { haproxyMessages } from "./config-writer.js";

/**
 * The master CLI's answer to `reload`, read by what it says (fixtures: test/fixtures/haproxy-<version>/
 * reload-cycle-*-reload-reply-*.txt and reload-reply-busy.txt). Pure: the socket is master-cli.ts's.
 *
 *  - 2.6 answers nothing, whether the reload then works or not: no verdict, `show proc` tells.
 *  - 2.7+ waits for the new worker and answers `Success=1` or `Success=0`, a `--` line, then the
 *    reload's startup log; a failure's log holds HAProxy's `[ALERT]` lines, its reason.
 *  - 3.1+ answers `Success=0` with `Another reload is still in progress.` while a worker is still
 *    starting (also right after HAProxy itself started): nothing was tried, so it may be sent again.
 */
export type ReloadReply =
  | { kind: "no-verdict" }
  | { kind: "succeeded"; log: string }
  | { kind: "failed"; log: string; reason: string }
  | { kind: "busy"; log: string };

const STATUS = /^Success=([01])\n--(?:\n|$)/;
/** Said by the master about the reload itself, not by a config line; worded loosely on purpose. */
const BUSY = /\breload\b[^\n]*\bin progress\b/i;

export function parseReloadReply(text: string): ReloadReply {
  if (text === "") return { kind: "no-verdict" };
  const status = STATUS.exec(text);
  // Anything else is a refusal (not a master socket, too low a level): nothing was reloaded.
  if (!status) throw new ReplyParseError("reload", `expected an empty reply or 'Success=0|1' then '--', got ${quote(text.slice(0, 200))}`);
  const log = text.slice(status[0].length).replace(/\n+$/, "");
  if (status[1] === "1") return { kind: "succeeded", log };
  const alerts = haproxyMessages(log, "ALERT");
  if (alerts.length === 0 && BUSY.test(log)) return { kind: "busy", log };
  return { kind: "failed", log, reason: alerts.length > 0 ? alerts.join("\n") : log || "(HAProxy gave no reason)" };
}
