import { ReplyParseError } from "../../errors.js";
import { lineError, quote, readInteger, replyLines } from "./fields.js";

const COMMAND = "show info";
const SEPARATOR = ":";

export interface HaproxyInfo {
  name: string;
  version: string;
  pid: number;
  uptimeSeconds: number | null;
  fields: Readonly<Record<string, string>>;
}

interface Field {
  readonly lineNumber: number;
  readonly value: string;
}

/** Parses the `Key: value` lines of `show info`; Name, Version and Pid must be there. */
export function parseInfo(text: string): HaproxyInfo {
  const byKey = readFields(replyLines(COMMAND, text));
  const pid = required(byKey, "Pid");
  const uptime = byKey.get("Uptime_sec");
  return {
    name: required(byKey, "Name").value,
    version: required(byKey, "Version").value,
    pid: readInteger(COMMAND, pid.lineNumber, "Pid", pid.value),
    uptimeSeconds: uptime === undefined ? null : readInteger(COMMAND, uptime.lineNumber, "Uptime_sec", uptime.value),
    fields: toRecord(byKey),
  };
}

function readFields(lines: readonly string[]): Map<string, Field> {
  const byKey = new Map<string, Field>();
  lines.forEach((line, i) => {
    const lineNumber = i + 1;
    const [key, value] = splitField(line, lineNumber);
    if (byKey.has(key)) throw lineError(COMMAND, lineNumber, `key ${quote(key)} appears twice`);
    byKey.set(key, { lineNumber, value });
  });
  return byKey;
}

/** Keys hold spaces ("Unstoppable Jobs") but never a colon, so the first colon splits. */
function splitField(line: string, lineNumber: number): [string, string] {
  const at = line.indexOf(SEPARATOR);
  if (at === -1) throw lineError(COMMAND, lineNumber, `expected 'Key: value', got ${quote(line)}`);
  const key = line.slice(0, at);
  if (key === "" || key.trim() !== key) throw lineError(COMMAND, lineNumber, `bad key ${quote(key)}`);
  const rest = line.slice(at + SEPARATOR.length);
  return [key, rest.startsWith(" ") ? rest.slice(1) : rest];
}

function required(byKey: ReadonlyMap<string, Field>, key: string): Field {
  const field = byKey.get(key);
  if (field === undefined) throw new ReplyParseError(COMMAND, `no ${quote(key)} line`);
  return field;
}

function toRecord(byKey: ReadonlyMap<string, Field>): Readonly<Record<string, string>> {
  const record = Object.create(null) as Record<string, string>;
  for (const [key, field] of byKey) record[key] = field.value;
  return record;
}
