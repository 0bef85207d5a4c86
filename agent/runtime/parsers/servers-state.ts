import { columnIndexes, lineError, quote, readHeader, replyLines, LazyColumns, TableRow, type Header } from "./fields.js";

const COMMAND = "show servers state";
const FORMAT_VERSION = "1";
const HEADER_PREFIX = "# ";
const MAX_PORT = 65535;
/** Proxy and server ids are C ints in HAProxy, numbered from 1; the agent asks `show stat` by them. */
const MAX_ID = 2 ** 31 - 1;

export interface ServerStateRow {
  backendId: number;
  backend: string;
  serverId: number;
  server: string;
  /** srv_addr as printed: `-` when the server has only an FQDN. */
  address: string;
  opState: number;
  /** Bit field: a `disabled` template slot shows 5, enabled 4, in drain 12, a fresh dynamic server 1. */
  adminState: number;
  userWeight: number;
  initialWeight: number;
  checkState: number;
  fqdn: string | null;
  port: number | null;
  columns: Readonly<Record<string, string>>;
}

const REQUIRED = [
  "be_id",
  "be_name",
  "srv_id",
  "srv_name",
  "srv_addr",
  "srv_op_state",
  "srv_admin_state",
  "srv_uweight",
  "srv_iweight",
  "srv_check_state",
  "srv_fqdn",
] as const;

type Columns = Readonly<Record<(typeof REQUIRED)[number], number>> & { readonly srv_port: number | undefined };

/** Parses the reply to `show servers state [backend]`; an existing backend without servers gives []. */
export function parseServersState(text: string): ServerStateRow[] {
  const lines = replyLines(COMMAND, text);
  checkVersion(lines[0]);
  const header = readStateHeader(lines[1]);
  const columns: Columns = { ...columnIndexes(COMMAND, header, REQUIRED), srv_port: header.index.get("srv_port") };
  const rows: ServerStateRow[] = [];
  for (let i = 2; i < lines.length; i++) {
    const lineNumber = i + 1;
    const fields = splitStateLine(lines[i] ?? "", lineNumber);
    rows.push(toServerState(TableRow.of(COMMAND, header, lineNumber, fields), columns));
  }
  return rows;
}

function checkVersion(line: string | undefined): void {
  if (line === undefined) throw lineError(COMMAND, 1, "empty reply, expected the format version");
  if (line !== FORMAT_VERSION) {
    throw lineError(COMMAND, 1, `expected format version ${FORMAT_VERSION}, got ${quote(line)}`);
  }
}

function readStateHeader(line: string | undefined): Header {
  if (line === undefined) throw lineError(COMMAND, 2, "missing the '# be_id be_name ...' header");
  if (!line.startsWith(HEADER_PREFIX)) {
    throw lineError(COMMAND, 2, `expected a header starting with '${HEADER_PREFIX}', got ${quote(line)}`);
  }
  return readHeader(COMMAND, 2, line.slice(HEADER_PREFIX.length).split(" "));
}

/**
 * HAProxy prints `-` for "no value", never an empty field, so an empty one means a doubled or
 * trailing space, or a line cut short right after a separator.
 */
function splitStateLine(line: string, lineNumber: number): string[] {
  const fields = line.split(" ");
  const empty = fields.indexOf("");
  if (empty !== -1) throw lineError(COMMAND, lineNumber, `empty field at position ${empty + 1}: ${quote(line)}`);
  return fields;
}

function toServerState(row: TableRow, at: Columns): ServerStateRow {
  return Object.assign(new LazyColumns(row), {
    backendId: readId(row, at.be_id, "be_id"),
    backend: row.text(at.be_name),
    serverId: readId(row, at.srv_id, "srv_id"),
    server: row.text(at.srv_name),
    address: row.text(at.srv_addr),
    opState: row.integer(at.srv_op_state),
    adminState: row.integer(at.srv_admin_state),
    userWeight: row.integer(at.srv_uweight),
    initialWeight: row.integer(at.srv_iweight),
    checkState: row.integer(at.srv_check_state),
    fqdn: row.optionalText(at.srv_fqdn, "-"),
    port: at.srv_port === undefined ? null : readPort(row, at.srv_port),
  });
}

function readId(row: TableRow, position: number, name: string): number {
  const id = row.integer(position);
  if (id < 1 || id > MAX_ID) throw lineError(COMMAND, row.lineNumber, `${name}: ${id} is not an id in 1..${MAX_ID}`);
  return id;
}

/** HAProxy stores a port in 16 bits, so anything larger cannot be what it printed. */
function readPort(row: TableRow, position: number): number | null {
  const port = row.optionalInteger(position, "-");
  if (port !== null && port > MAX_PORT) {
    throw lineError(COMMAND, row.lineNumber, `srv_port: ${port} is above ${MAX_PORT}`);
  }
  return port;
}
