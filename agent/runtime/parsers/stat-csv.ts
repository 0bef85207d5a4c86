import { columnIndexes, lineError, quote, readHeader, replyLines, LazyColumns, TableRow, type Header } from "./fields.js";

const COMMAND = "show stat";
const HEADER_PREFIX = "# ";

export interface StatRow {
  proxy: string;
  /** FRONTEND, BACKEND, or the server or listener name. */
  service: string;
  /** 0 frontend, 1 backend, 2 server, 3 listener. */
  type: number;
  /** e.g. "UP", "DOWN", "DOWN 1/2", "UP 2/3", "MAINT", "DRAIN", "no check", "OPEN". */
  status: string;
  currentSessions: number | null;
  weight: number | null;
  /** "ip:port" or "[v6]:port"; null for a server known only by an FQDN, and for proxies. */
  address: string | null;
  algorithm: string | null;
  /** May carry a leading "* " while a check is running, e.g. "* L4TOUT". */
  checkStatus: string | null;
  columns: Readonly<Record<string, string>>;
}

const REQUIRED = ["pxname", "svname", "type", "status", "scur", "weight", "addr", "algo", "check_status"] as const;

type Columns = Readonly<Record<(typeof REQUIRED)[number], number>>;

/** Parses the CSV reply to `show stat`; a header without rows gives []. */
export function parseStatCsv(text: string): StatRow[] {
  const lines = replyLines(COMMAND, text);
  const header = readCsvHeader(lines[0]);
  const columns = columnIndexes(COMMAND, header, REQUIRED);
  const rows: StatRow[] = [];
  for (let i = 1; i < lines.length; i++) {
    const lineNumber = i + 1;
    const fields = splitCsvLine(lines[i] ?? "", lineNumber);
    rows.push(toStatRow(TableRow.of(COMMAND, header, lineNumber, fields), columns));
  }
  return rows;
}

function readCsvHeader(line: string | undefined): Header {
  if (line === undefined) throw lineError(COMMAND, 1, "empty reply, expected the '# pxname,svname,...' header");
  if (!line.startsWith(HEADER_PREFIX)) {
    throw lineError(COMMAND, 1, `expected a header starting with '${HEADER_PREFIX}', got ${quote(line)}`);
  }
  return readHeader(COMMAND, 1, splitCsvLine(line.slice(HEADER_PREFIX.length), 1));
}

/**
 * HAProxy ends every line, header included, with a comma. Requiring it catches a line cut short
 * that happens to keep the right number of commas; values never contain commas in 2.6.
 */
function splitCsvLine(line: string, lineNumber: number): string[] {
  if (!line.endsWith(",")) throw lineError(COMMAND, lineNumber, `line does not end with ',': ${quote(line)}`);
  return line.slice(0, -1).split(",");
}

function toStatRow(row: TableRow, at: Columns): StatRow {
  return Object.assign(new LazyColumns(row), {
    proxy: row.text(at.pxname),
    service: row.text(at.svname),
    type: row.integer(at.type),
    status: row.text(at.status),
    currentSessions: row.optionalInteger(at.scur, ""),
    weight: row.optionalInteger(at.weight, ""),
    address: row.optionalText(at.addr, ""),
    algorithm: row.optionalText(at.algo, ""),
    checkStatus: row.optionalText(at.check_status, ""),
  });
}
