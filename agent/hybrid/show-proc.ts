import { ReplyParseError } from "../errors.js";
import { lineError, quote, readHeader, readInteger, replyLines, type Header } from "../runtime/parsers/fields.js";

/**
 * Readers for the master CLI's `show proc` and its prompt (captured in test/fixtures/haproxy-2.6/
 * master-*.txt, and per version in haproxy-<version>/reload-cycle-*.txt). Pure: the socket is
 * master-cli.ts's business.
 *
 * Since 3.1 `# programs` is printed only when there are programs (b49ddae21), and after a failed
 * reload `# workers` is empty while the worker that still serves is listed under `# old workers`
 * (154848a31): see servingWorkers().
 *
 * 2.6 prints `#<PID> <type> <reloads> <uptime> <version>` padded to 15 characters per column,
 * but a value may overflow its padding, so columns are found by the header's names and each
 * row is split into values, never cut at fixed offsets. Two values hold a space themselves:
 * the master's `3 [failed: 1]` (2.6) and an old worker's `[was: 1]` (2.4's relative PID).
 */

const COMMAND = "show proc";

export interface MasterProcess {
  pid: number;
  /** Reloads since the master started, failed ones included. */
  reloads: number;
  /**
   * Whether the latest reload failed, as a count: 2.6-3.0 count failures since the last success,
   * 3.1+ count only the latest reload (0 or 1). Either way `> 0` means the latest reload failed.
   * Null when the version does not print it.
   */
  failedReloads: number | null;
  uptimeSeconds: number;
  version: string;
}

export interface ProcessEntry {
  pid: number;
  /** `worker`, or a `program` section's name. */
  type: string;
  /** Only in versions with a `<relative PID>` column (not 2.6); an old worker's `[was: N]` gives N. */
  relativePid: number | null;
  /** Reloads this process has lived through (a worker's grows on every reload, failed ones too). */
  reloads: number;
  uptimeSeconds: number;
  /** Null for programs, which print `-`. */
  version: string | null;
}

export interface ShowProc {
  master: MasterProcess;
  /** Current workers: the ones that take new connections (none on 3.1+ after a failed reload). */
  workers: ProcessEntry[];
  /** Workers replaced by a reload and still finishing their connections. */
  oldWorkers: ProcessEntry[];
  programs: ProcessEntry[];
  oldPrograms: ProcessEntry[];
}

export interface MasterPrompt {
  /** As printed, e.g. `master[ReloadFailed]> `. */
  text: string;
  /** `[ReloadFailed]` is there exactly when the failed-reload counter is above 0 (2.6-3.4). */
  reloadFailed: boolean;
}

/** The reply to `prompt` then `show proc` on one connection: the prompt carries the reload status. */
export interface MasterStatus {
  prompt: MasterPrompt;
  proc: ShowProc;
}

const SECTIONS = {
  workers: "workers",
  "old workers": "oldWorkers",
  programs: "programs",
  "old programs": "oldPrograms",
} as const satisfies Record<string, keyof Omit<ShowProc, "master">>;

type SectionTitle = keyof typeof SECTIONS;

const REQUIRED = ["PID", "type", "reloads", "uptime", "version"] as const;
const RELATIVE_PID = "relative PID";

/** A value with a space of its own first, then any run of non-spaces. */
const VALUE = /\d+ \[failed: \d+\]|\[was: \d+\]|\S+/g;
const HEADER_NAME = /<([^<>]+)>/g;
const MASTER_RELOADS = /^(\d+)(?: \[failed: (\d+)\])?$/;
const WAS = /^\[was: (\d+)\]$/;
const UPTIME = /^(\d+)d(\d{2})h(\d{2})m(\d{2})s$/;

interface Columns {
  header: Header;
  pid: number;
  type: number;
  reloads: number;
  uptime: number;
  version: number;
  relativePid: number | undefined;
}

export function parseShowProc(text: string): ShowProc {
  // The reply ends with a blank line: without it, it was cut, even if at a line's end.
  if (!text.endsWith("\n\n")) throw new ReplyParseError(COMMAND, `reply cut short (no blank line at its end): ${quote(text.slice(-60))}`);
  const lines = replyLines(COMMAND, text);
  const columns = readColumns(lines[0]);
  const master = readMaster(columns, lines[1]);
  const children: Omit<ShowProc, "master"> = { workers: [], oldWorkers: [], programs: [], oldPrograms: [] };
  const seen = new Set<SectionTitle>();
  let section: SectionTitle | null = null;
  for (let i = 2; i < lines.length; i++) {
    const line = lines[i] ?? "";
    const lineNumber = i + 1;
    if (line.startsWith("# ")) {
      section = readSectionTitle(line, lineNumber, seen);
      continue;
    }
    if (section === null) throw lineError(COMMAND, lineNumber, `a process after the master's line but before any '# workers' section: ${quote(line)}`);
    const child = readChild(columns, splitRow(columns, line, lineNumber), lineNumber);
    const isWorker = section === "workers" || section === "old workers";
    if (isWorker !== (child.type === "worker")) {
      throw lineError(COMMAND, lineNumber, `a process of type ${quote(child.type)} in the '# ${section}' section`);
    }
    children[SECTIONS[section]].push(child);
  }
  // Every version prints `# workers`, even empty (3.1+ after a failed reload): without it the reply was cut short.
  if (!seen.has("workers")) throw lineError(COMMAND, lines.length, "no '# workers' section");
  return { master, ...children };
}

/**
 * Reads the reply to `prompt\nshow proc\n`: a prompt, the `show proc` text, and a prompt again.
 * The last prompt is the status; in 2.6 it is `master> ` or `master[ReloadFailed]> `.
 */
export function parseMasterStatus(text: string): MasterStatus {
  const first = PROMPT_AT_START.exec(text);
  const last = PROMPT_AT_END.exec(text);
  if (!first || !last || last.index < first[0].length) {
    throw new ReplyParseError(COMMAND, `expected the master's prompt before and after the reply, got ${quote(text)}`);
  }
  return {
    prompt: readPrompt(last[1] ?? ""),
    proc: parseShowProc(text.slice(first[0].length, last.index)),
  };
}

const PROMPT_AT_START = /^master(?:\[[A-Za-z]+\])*> /;
// Anchored to a line start so that a `> ` inside a value can never pass for the prompt.
const PROMPT_AT_END = /(?<=\n)(master(?:\[[A-Za-z]+\])*> )$/;

function readPrompt(text: string): MasterPrompt {
  return { text, reloadFailed: text.includes("[ReloadFailed]") };
}

function readColumns(line: string | undefined): Columns {
  if (line === undefined || !line.startsWith("#<")) {
    // The reply of a non-master socket (`Unknown command...`) ends up here.
    throw lineError(COMMAND, 1, `expected the '#<PID> <type> ...' header of the master CLI, got ${quote(line ?? "")}`);
  }
  const names = [...line.matchAll(HEADER_NAME)].map((match) => match[1] ?? "");
  const rest = line.slice(1).replace(HEADER_NAME, "");
  if (rest.trim() !== "") throw lineError(COMMAND, 1, `text between the header's <names>: ${quote(line)}`);
  const header = readHeader(COMMAND, 1, names);
  const at = (name: string): number => {
    const position = header.index.get(name);
    if (position === undefined) throw lineError(COMMAND, 1, `header has no ${quote(`<${name}>`)} column`);
    return position;
  };
  const [pid, type, reloads, uptime, version] = REQUIRED.map(at) as [number, number, number, number, number];
  return { header, pid, type, reloads, uptime, version, relativePid: header.index.get(RELATIVE_PID) };
}

function splitRow(columns: Columns, line: string, lineNumber: number): string[] {
  const values = line.match(VALUE) ?? [];
  if (values.length !== columns.header.names.length) {
    throw lineError(COMMAND, lineNumber, `expected ${columns.header.names.length} values as in the header, got ${values.length}: ${quote(line)}`);
  }
  return values;
}

function readMaster(columns: Columns, line: string | undefined): MasterProcess {
  if (line === undefined) throw lineError(COMMAND, 2, "no master line");
  const values = splitRow(columns, line, 2);
  const type = values[columns.type] ?? "";
  if (type !== "master") throw lineError(COMMAND, 2, `expected the master's line first, got type ${quote(type)}`);
  const reloads = MASTER_RELOADS.exec(values[columns.reloads] ?? "");
  if (!reloads) throw lineError(COMMAND, 2, `reloads: expected 'N' or 'N [failed: M]', got ${quote(values[columns.reloads] ?? "")}`);
  return {
    pid: readInteger(COMMAND, 2, "PID", values[columns.pid] ?? ""),
    reloads: readInteger(COMMAND, 2, "reloads", reloads[1] ?? ""),
    failedReloads: reloads[2] === undefined ? null : readInteger(COMMAND, 2, "failed reloads", reloads[2]),
    uptimeSeconds: readUptime(values[columns.uptime] ?? "", 2),
    version: values[columns.version] ?? "",
  };
}

function readChild(columns: Columns, values: string[], lineNumber: number): ProcessEntry {
  const version = values[columns.version] ?? "";
  return {
    pid: readInteger(COMMAND, lineNumber, "PID", values[columns.pid] ?? ""),
    type: values[columns.type] ?? "",
    relativePid: columns.relativePid === undefined ? null : readRelativePid(values[columns.relativePid] ?? "", lineNumber),
    reloads: readInteger(COMMAND, lineNumber, "reloads", values[columns.reloads] ?? ""),
    uptimeSeconds: readUptime(values[columns.uptime] ?? "", lineNumber),
    version: version === "-" ? null : version,
  };
}

function readRelativePid(raw: string, lineNumber: number): number | null {
  if (raw === "-") return null;
  const was = WAS.exec(raw);
  return readInteger(COMMAND, lineNumber, "relative PID", was ? (was[1] ?? "") : raw);
}

function readSectionTitle(line: string, lineNumber: number, seen: Set<SectionTitle>): SectionTitle {
  const title = line.slice(2);
  if (!Object.hasOwn(SECTIONS, title)) throw lineError(COMMAND, lineNumber, `unknown section ${quote(line)}`);
  const known = title as SectionTitle;
  if (seen.has(known)) throw lineError(COMMAND, lineNumber, `section ${quote(line)} appears twice`);
  seen.add(known);
  return known;
}

function readUptime(raw: string, lineNumber: number): number {
  const match = UPTIME.exec(raw);
  if (!match) throw lineError(COMMAND, lineNumber, `uptime: expected like 0d00h01m05s, got ${quote(raw)}`);
  const [days, hours, minutes, seconds] = match.slice(1).map(Number) as [number, number, number, number];
  const total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds;
  // Days have no width: enough digits make the sum inexact, or Infinity.
  if (!Number.isSafeInteger(total)) throw lineError(COMMAND, lineNumber, `uptime: ${quote(raw)} is out of range`);
  return total;
}

/**
 * The workers that take new connections: the current ones. When there is none, it is 3.1+ after
 * a failed reload, which lists the worker that still serves under `# old workers`: of those, the
 * ones replaced last, i.e. with the fewest reloads (every reload adds one to each old worker's count).
 */
export function servingWorkers(proc: ShowProc): ProcessEntry[] {
  if (proc.workers.length > 0 || proc.oldWorkers.length === 0) return proc.workers;
  const fewest = Math.min(...proc.oldWorkers.map((worker) => worker.reloads));
  return proc.oldWorkers.filter((worker) => worker.reloads === fewest);
}
