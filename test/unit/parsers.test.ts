import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ReplyParseError } from "../../agent/errors.js";
import { parseBackendList } from "../../agent/runtime/parsers/backend-list.js";
import { parseInfo } from "../../agent/runtime/parsers/info.js";
import { parseServersState, type ServerStateRow } from "../../agent/runtime/parsers/servers-state.js";
import { parseStatCsv, type StatRow } from "../../agent/runtime/parsers/stat-csv.js";
import { caught, seededRandom } from "../support/helpers.js";

// Replies captured byte-exact from HAProxy 2.6.12 in interactive mode, prompt stripped.
function fixture(name: string): string {
  return readFileSync(new URL(`../fixtures/haproxy-2.6/${name}.txt`, import.meta.url), "utf8");
}

const SERVERS_STATE = fixture("show-servers-state");
const STAT = fixture("show-stat");
const INFO = fixture("show-info");
const BACKENDS = fixture("show-backend");

function expectReplyError(run: () => unknown, command: string, ...fragments: string[]): void {
  const error = caught(run);
  expect(error).toBeInstanceOf(ReplyParseError);
  const replyError = error as ReplyParseError;
  expect(replyError.code).toBe("HAFLEET_BAD_REPLY");
  expect(replyError.command).toBe(command);
  for (const fragment of fragments) expect(replyError.message).toContain(fragment);
}

/** A reply as a header and rows, so tests can move, add and drop columns by name. */
interface Table {
  names: string[];
  rows: string[][];
}

function dataLines(lines: string[], from: number): string[] {
  const rest = lines.slice(from);
  const end = rest.indexOf("");
  return end === -1 ? rest : rest.slice(0, end);
}

function stateTable(text: string): Table {
  const lines = text.split("\n");
  return {
    names: (lines[1] ?? "").slice(2).split(" "),
    rows: dataLines(lines, 2).map((line) => line.split(" ")),
  };
}

function stateText(table: Table): string {
  return ["1", `# ${table.names.join(" ")}`, ...table.rows.map((row) => row.join(" ")), "", ""].join("\n");
}

function csvTable(text: string): Table {
  const lines = text.split("\n");
  return {
    names: (lines[0] ?? "").slice(2, -1).split(","),
    rows: dataLines(lines, 1).map((line) => line.slice(0, -1).split(",")),
  };
}

function csvText(table: Table): string {
  return [`# ${table.names.join(",")},`, ...table.rows.map((row) => `${row.join(",")},`), "", ""].join("\n");
}

function mapColumns(table: Table, order: (indexes: number[]) => number[]): Table {
  const picked = order(table.names.map((_, i) => i));
  return {
    names: picked.map((i) => table.names[i] ?? ""),
    rows: table.rows.map((row) => picked.map((i) => row[i] ?? "")),
  };
}

function withoutColumn(table: Table, name: string): Table {
  const at = table.names.indexOf(name);
  expect(at).toBeGreaterThanOrEqual(0);
  return mapColumns(table, (indexes) => indexes.filter((i) => i !== at));
}

function withColumn(table: Table, name: string, value: string, at: number): Table {
  const insert = <T>(list: T[], item: T): T[] => [...list.slice(0, at), item, ...list.slice(at)];
  return { names: insert(table.names, name), rows: table.rows.map((row) => insert(row, value)) };
}

function withField(table: Table, rowIndex: number, name: string, value: string): Table {
  const at = table.names.indexOf(name);
  expect(at).toBeGreaterThanOrEqual(0);
  const rows = table.rows.map((row, i) => (i === rowIndex ? row.map((field, j) => (j === at ? value : field)) : row));
  return { names: table.names, rows };
}

function rotate(indexes: number[], by: number): number[] {
  return [...indexes.slice(by), ...indexes.slice(0, by)];
}

function byServer(rows: ServerStateRow[], server: string): ServerStateRow {
  const row = rows.find((candidate) => candidate.server === server);
  if (row === undefined) throw new Error(`no server ${server}`);
  return row;
}

function byService(rows: StatRow[], proxy: string, service: string): StatRow {
  const row = rows.find((candidate) => candidate.proxy === proxy && candidate.service === service);
  if (row === undefined) throw new Error(`no ${proxy}/${service}`);
  return row;
}

describe("parseServersState", () => {
  const rows = parseServersState(SERVERS_STATE);

  it("reads every server of the captured reply in order", () => {
    expect(rows.map((row) => `${row.backend}/${row.server}`)).toEqual([
      "be_app/app1",
      "be_app/app2",
      "be_app/app3",
      "be_app/app4",
      "be_app/chk1",
      "be_app/chk2",
      "be_app/hafleet-x",
      "be_app/hafleet-v6",
      "be_app/hafleet-v6b",
      "be_app/hafleet-v6c",
      "be_app/hafleet-v6d",
      "be_app/hafleet-fqdn",
      "be_app/hafleet-v6e",
      "be_app/hafleet-v6f",
      "be_app/hafleet-bad",
      "be_static/s1",
      "be_static/s2",
      "be_static/s3",
      "be_plain/web1",
    ]);
  });

  it("types a template slot moved at runtime and given a weight", () => {
    const { columns, ...typed } = byServer(rows, "app1");
    expect(typed).toEqual({
      backendId: 3,
      backend: "be_app",
      serverId: 1,
      server: "app1",
      address: "127.0.0.2",
      opState: 2,
      adminState: 4,
      userWeight: 50,
      initialWeight: 1,
      checkState: 8,
      fqdn: null,
      port: 8081,
    });
    expect(columns.srv_time_since_last_change).toBe("23");
    expect(columns.srvrecord).toBe("-");
    expect(Object.keys(columns)).toHaveLength(25);
  });

  it("reads the admin-state bits of drain, maint, and a fresh dynamic server", () => {
    expect(byServer(rows, "app2")).toMatchObject({ adminState: 12, opState: 2, port: 8082 });
    expect(byServer(rows, "app3")).toMatchObject({ adminState: 5, opState: 0, port: 1 });
    expect(byServer(rows, "hafleet-v6c")).toMatchObject({ adminState: 1, opState: 0, port: 9002 });
    expect(byServer(rows, "hafleet-x")).toMatchObject({ adminState: 0, userWeight: 7, initialWeight: 7, checkState: 6 });
  });

  it("keeps IPv6 addresses as printed, without brackets", () => {
    expect(byServer(rows, "app4")).toMatchObject({ address: "::1", port: 8084 });
    expect(byServer(rows, "chk2")).toMatchObject({ address: "2001:db8::20", port: 80 });
    expect(byServer(rows, "hafleet-v6f")).toMatchObject({ address: "2001:db8::10", port: 443 });
    expect(byServer(rows, "hafleet-v6e")).toMatchObject({ address: "::1", port: 0 });
  });

  it("reads an FQDN-only server: address '-' kept, fqdn set", () => {
    expect(byServer(rows, "hafleet-fqdn")).toMatchObject({ address: "-", fqdn: "localhost", port: 9005 });
    // `add server B/S [::1:9000` was accepted by HAProxy 2.6 as the FQDN "[::1".
    expect(byServer(rows, "hafleet-bad")).toMatchObject({ address: "-", fqdn: "[::1", port: 9000 });
  });

  it("reads user and initial weights apart (static-rr slot set to 0%)", () => {
    expect(byServer(rows, "s1")).toMatchObject({ userWeight: 0, initialWeight: 1, address: "127.0.0.4" });
    expect(byServer(rows, "web1")).toMatchObject({ backendId: 5, userWeight: 20, initialWeight: 20, port: 8080 });
  });

  it("reads a one-backend reply", () => {
    const one = parseServersState(fixture("show-servers-state-one-backend"));
    expect(one).toHaveLength(1);
    expect(one[0]).toMatchObject({ backend: "be_plain", server: "web1", port: 8080 });
  });

  it("gives [] for a backend without servers", () => {
    expect(parseServersState(fixture("show-servers-state-empty-backend"))).toEqual([]);
  });

  it("rejects the reply for an unknown backend", () => {
    const text = fixture("show-servers-state-unknown-backend");
    expect(text).toBe("Can't find backend.\n\n");
    expectReplyError(() => parseServersState(text), "show servers state", "line 1", "Can't find backend.");
  });

  it("accepts any number of trailing newlines", () => {
    const bare = SERVERS_STATE.replace(/\n+$/, "");
    expect(parseServersState(bare)).toEqual(rows);
    expect(parseServersState(`${bare}\n`)).toEqual(rows);
    expect(parseServersState(`${bare}\n\n\n\n`)).toEqual(rows);
  });

  it.each([
    ["reversed", (indexes: number[]) => [...indexes].reverse()],
    ["rotated", (indexes: number[]) => rotate(indexes, 7)],
  ])("finds columns by name when they are %s", (_, order) => {
    const moved = stateText(mapColumns(stateTable(SERVERS_STATE), order));
    expect(moved.split("\n")[1]).not.toBe(SERVERS_STATE.split("\n")[1]);
    expect(parseServersState(moved)).toEqual(rows);
  });

  it("tolerates unknown columns and keeps them in columns", () => {
    let table = withColumn(stateTable(SERVERS_STATE), "srv_future", "x", 0);
    table = withColumn(table, "srv_other", "-", 9);
    const parsed = parseServersState(stateText(table));
    expect(parsed.map(({ columns: _, ...typed }) => typed)).toEqual(rows.map(({ columns: _, ...typed }) => typed));
    expect(parsed[0]?.columns.srv_future).toBe("x");
    expect(parsed[0]?.columns.srv_other).toBe("-");
  });

  it("gives a null port when srv_port is absent or '-'", () => {
    const absent = parseServersState(stateText(withoutColumn(stateTable(SERVERS_STATE), "srv_port")));
    expect(absent.map((row) => row.port)).toEqual(rows.map(() => null));
    expect(absent[0]).toMatchObject({ address: "127.0.0.2", userWeight: 50 });
    const dash = parseServersState(stateText(withField(stateTable(SERVERS_STATE), 0, "srv_port", "-")));
    expect(dash[0]?.port).toBeNull();
    expect(dash[1]?.port).toBe(8082);
  });

  it.each([
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
  ])("rejects a header without %s", (name) => {
    const text = stateText(withoutColumn(stateTable(SERVERS_STATE), name));
    expectReplyError(() => parseServersState(text), "show servers state", "line 2", `"${name}"`);
  });

  it.each([
    "be_id",
    "srv_id",
    "srv_op_state",
    "srv_admin_state",
    "srv_uweight",
    "srv_iweight",
    "srv_check_state",
    "srv_port",
  ])("rejects a non-integer %s", (name) => {
    for (const bad of ["x", "-1", "1.5", "1e3", "0x10", "+1", "٣"]) {
      const text = stateText(withField(stateTable(SERVERS_STATE), 2, name, bad));
      expectReplyError(() => parseServersState(text), "show servers state", "line 5", name, JSON.stringify(bad));
    }
  });

  it("rejects a port above 65535", () => {
    const text = stateText(withField(stateTable(SERVERS_STATE), 0, "srv_port", "70000"));
    expectReplyError(() => parseServersState(text), "show servers state", "line 3", "srv_port", "70000");
  });

  it("rejects a row with too few or too many fields", () => {
    const lines = SERVERS_STATE.split("\n");
    const short = [...lines.slice(0, 4), (lines[4] ?? "").replace(/ \S+$/, ""), ...lines.slice(5)].join("\n");
    expectReplyError(() => parseServersState(short), "show servers state", "line 5", "expected 25", "got 24");
    const long = [...lines.slice(0, 4), `${lines[4] ?? ""} 7`, ...lines.slice(5)].join("\n");
    expectReplyError(() => parseServersState(long), "show servers state", "line 5", "expected 25", "got 26");
  });

  it("rejects empty fields from doubled or trailing spaces", () => {
    const lines = SERVERS_STATE.split("\n");
    const doubled = [...lines.slice(0, 2), (lines[2] ?? "").replace(" be_app ", " be_app  "), ...lines.slice(3)];
    expectReplyError(() => parseServersState(doubled.join("\n")), "show servers state", "line 3", "empty field");
    const trailing = [...lines.slice(0, 3), `${lines[3] ?? ""} `, ...lines.slice(4)];
    expectReplyError(() => parseServersState(trailing.join("\n")), "show servers state", "line 4", "empty field");
  });

  it("never returns the rows before a line cut short", () => {
    const body = SERVERS_STATE.replace(/\n+$/, "");
    const firstRow = body.indexOf("\n", body.indexOf("\n") + 1) + 1;
    let cuts = 0;
    for (let end = firstRow + 1; end < body.length; end++) {
      if (body[end] === "\n" || body[end - 1] === "\n") continue;
      cuts++;
      expectReplyError(() => parseServersState(body.slice(0, end)), "show servers state");
    }
    expect(cuts).toBeGreaterThan(1000);
  });

  it.each([
    ["2\n# be_id be_name\n", '"2"'],
    ["1.0\n# be_id be_name\n", '"1.0"'],
    [" 1\n# be_id be_name\n", '" 1"'],
    ["# be_id be_name srv_id\n", "format version"],
    ["", "empty reply"],
    ["\n\n", "empty reply"],
  ])("rejects a bad format version (%#)", (text, fragment) => {
    expectReplyError(() => parseServersState(text), "show servers state", "line 1", fragment);
  });

  it.each([
    ["1\n", "missing"],
    ["1", "missing"],
    ["1\nbe_id be_name srv_id\n", "header"],
    ["1\n#be_id be_name\n", "header"],
    ["1\n# be_id be_name be_id\n", "twice"],
    ["1\n# be_id  be_name\n", "empty column name at position 2"],
  ])("rejects a bad header (%#)", (text, fragment) => {
    expectReplyError(() => parseServersState(text), "show servers state", "line 2", fragment);
  });

  it("rejects text after the blank line that ends the reply", () => {
    const text = `${SERVERS_STATE}1\n`;
    const lineNumber = SERVERS_STATE.split("\n").length;
    expectReplyError(() => parseServersState(text), "show servers state", `line ${lineNumber}`, "after the blank line");
  });

  it("treats a column named __proto__ as a plain column", () => {
    const parsed = parseServersState(stateText(withColumn(stateTable(SERVERS_STATE), "__proto__", "x", 3)));
    expect(parsed[0]?.columns.__proto__).toBe("x");
    expect(parsed[0]?.columns.toString).toBeUndefined();
  });
});

describe("parseStatCsv", () => {
  const rows = parseStatCsv(STAT);

  it("reads every proxy, server and backend line", () => {
    expect(rows).toHaveLength(24);
    expect(rows.filter((row) => row.type === 2)).toHaveLength(19);
    expect(rows.filter((row) => row.type === 1).map((row) => row.proxy)).toEqual([
      "be_app",
      "be_static",
      "be_plain",
      "be_empty",
    ]);
  });

  it("types a frontend line, where most columns are empty", () => {
    const { columns, ...typed } = byService(rows, "fe_main", "FRONTEND");
    expect(typed).toEqual({
      proxy: "fe_main",
      service: "FRONTEND",
      type: 0,
      status: "OPEN",
      currentSessions: 0,
      weight: null,
      address: null,
      algorithm: null,
      checkStatus: null,
    });
    expect(columns.slim).toBe("9985");
    expect(columns.mode).toBe("http");
  });

  it("types server lines", () => {
    expect(byService(rows, "be_app", "app1")).toMatchObject({
      type: 2,
      status: "no check",
      currentSessions: 0,
      weight: 50,
      address: "127.0.0.2:8081",
      algorithm: null,
      checkStatus: null,
    });
    expect(byService(rows, "be_app", "app2").status).toBe("DRAIN");
    expect(byService(rows, "be_app", "app3").status).toBe("MAINT");
    expect(byService(rows, "be_app", "chk1")).toMatchObject({ status: "UP", checkStatus: "L4OK" });
    expect(byService(rows, "be_app", "chk2")).toMatchObject({ status: "DOWN", checkStatus: "* L4TOUT" });
    expect(byService(rows, "be_static", "s1").weight).toBe(0);
  });

  it("keeps bracketed IPv6 addresses and gives null for an FQDN-only server", () => {
    expect(byService(rows, "be_app", "app4").address).toBe("[::1]:8084");
    expect(byService(rows, "be_app", "chk2").address).toBe("[2001:db8::20]:80");
    expect(byService(rows, "be_app", "hafleet-v6f").address).toBe("[2001:db8::10]:443");
    expect(byService(rows, "be_app", "hafleet-v6e").address).toBe("[::1]:0");
    expect(byService(rows, "be_app", "hafleet-fqdn").address).toBeNull();
  });

  it("reads the algorithm of backends", () => {
    expect(byService(rows, "be_app", "BACKEND")).toMatchObject({ type: 1, algorithm: "roundrobin", weight: 58 });
    expect(byService(rows, "be_static", "BACKEND").algorithm).toBe("static-rr");
    expect(byService(rows, "be_empty", "BACKEND")).toMatchObject({ algorithm: "roundrobin", weight: 0, status: "UP" });
  });

  it("keeps all 128 columns, the one named '-' included", () => {
    const columns = byService(rows, "be_app", "app1").columns;
    expect(Object.keys(columns)).toHaveLength(128);
    expect(columns["-"]).toBe("-");
    expect(columns.h1_spliced_bytes_out).toBe("");
    expect(columns.iid).toBe("3");
  });

  it("reads the transient check statuses of a server going down", () => {
    const falling = parseStatCsv(fixture("show-stat-checks-falling"));
    expect(byService(falling, "be_app", "chk1")).toMatchObject({ status: "UP 2/3", checkStatus: "L4CON" });
    expect(byService(falling, "be_app", "hafleet-x")).toMatchObject({ status: "UP 2/3", weight: 7 });
  });

  it("reads listener lines (option socket-stats), IPv6 included", () => {
    const listeners = parseStatCsv(fixture("show-stat-listeners"));
    expect(byService(listeners, "fe_sock", "v4")).toMatchObject({
      type: 3,
      status: "OPEN",
      address: "127.0.0.1:41983",
      weight: null,
    });
    expect(byService(listeners, "fe_sock", "v6")).toMatchObject({ type: 3, address: "[::1]:41983" });
    expect(byService(listeners, "be_src", "a").address).toBe("[::1]:8080");
    expect(byService(listeners, "be_src", "b").columns.bck).toBe("1");
    expect(byService(listeners, "be_src", "BACKEND").algorithm).toBe("source");
  });

  it("reads a one-backend reply", () => {
    const one = parseStatCsv(fixture("show-stat-one-backend"));
    expect(one.map((row) => row.service)).toEqual(["web1", "BACKEND"]);
  });

  it("gives [] for a header without rows", () => {
    expect(parseStatCsv(csvText({ names: csvTable(STAT).names, rows: [] }))).toEqual([]);
  });

  it.each([
    ["reversed", (indexes: number[]) => [...indexes].reverse()],
    ["rotated", (indexes: number[]) => rotate(indexes, 40)],
  ])("finds columns by name when they are %s", (_, order) => {
    const moved = csvText(mapColumns(csvTable(STAT), order));
    expect(moved.split("\n")[0]).not.toBe(STAT.split("\n")[0]);
    expect(parseStatCsv(moved)).toEqual(rows);
  });

  it("tolerates unknown columns and keeps them in columns", () => {
    let table = withColumn(csvTable(STAT), "future_metric", "17", 0);
    table = withColumn(table, "other", "", 20);
    const parsed = parseStatCsv(csvText(table));
    expect(parsed.map(({ columns: _, ...typed }) => typed)).toEqual(rows.map(({ columns: _, ...typed }) => typed));
    expect(parsed[3]?.columns.future_metric).toBe("17");
    expect(Object.keys(parsed[3]?.columns ?? {})).toHaveLength(130);
  });

  it.each(["pxname", "svname", "type", "status", "scur", "weight", "addr", "algo", "check_status"])(
    "rejects a header without %s",
    (name) => {
      const text = csvText(withoutColumn(csvTable(STAT), name));
      expectReplyError(() => parseStatCsv(text), "show stat", "line 1", `"${name}"`);
    },
  );

  it.each([
    ["type", "x"],
    ["type", ""],
    ["type", "-1"],
    ["scur", "1.5"],
    ["scur", " 1"],
    ["weight", "-3"],
    ["weight", "9007199254740993"],
  ])("rejects %s = %j", (name, bad) => {
    const text = csvText(withField(csvTable(STAT), 4, name, bad));
    expectReplyError(() => parseStatCsv(text), "show stat", "line 6", name, JSON.stringify(bad));
  });

  it("rejects a row with too few or too many fields", () => {
    const table = csvTable(STAT);
    const short = { names: table.names, rows: table.rows.map((row, i) => (i === 2 ? row.slice(1) : row)) };
    expectReplyError(() => parseStatCsv(csvText(short)), "show stat", "line 4", "expected 128", "got 127");
    // A comma inside a value is one way a 2.6 line could grow a field.
    const comma = withField(table, 2, "check_desc", "a,b");
    expectReplyError(() => parseStatCsv(csvText(comma)), "show stat", "line 4", "expected 128", "got 129");
  });

  it("rejects a line without its trailing comma", () => {
    const lines = STAT.split("\n");
    const row = [lines[0], (lines[1] ?? "").slice(0, -1), ...lines.slice(2)].join("\n");
    expectReplyError(() => parseStatCsv(row), "show stat", "line 2", "does not end with ','");
    const header = [(lines[0] ?? "").slice(0, -1), ...lines.slice(1)].join("\n");
    expectReplyError(() => parseStatCsv(header), "show stat", "line 1", "does not end with ','");
  });

  it("never returns the rows before a line cut short", () => {
    const body = STAT.replace(/\n+$/, "");
    let cuts = 0;
    for (let end = body.indexOf("\n") + 2; end < body.length; end++) {
      if (body[end] === "\n" || body[end - 1] === "\n") continue;
      cuts++;
      expectReplyError(() => parseStatCsv(body.slice(0, end)), "show stat");
    }
    expect(cuts).toBeGreaterThan(5000);
  });

  it.each([
    ["", "empty reply"],
    ["pxname,svname,\n", "'# '"],
    ["#pxname,svname,\n", "'# '"],
    ["# \n", "does not end"],
    ["# pxname,,svname,\n", "empty column name at position 2"],
    ["# pxname,svname,pxname,\n", "twice"],
  ])("rejects a bad header (%#)", (text, fragment) => {
    expectReplyError(() => parseStatCsv(text), "show stat", "line 1", fragment);
  });

  it("rejects text after the blank line that ends the reply", () => {
    expectReplyError(() => parseStatCsv(`${STAT}fe_main,FRONTEND,\n`), "show stat", "after the blank line");
  });
});

describe("parseInfo", () => {
  const info = parseInfo(INFO);

  it("reads name, version, pid and uptime", () => {
    const { fields, ...typed } = info;
    expect(typed).toEqual({ name: "HAProxy", version: "2.6.12-1+deb12u4", pid: 3456, uptimeSeconds: 38 });
    expect(fields.Nbthread).toBe("2");
    expect(fields.Release_date).toBe("2026/10/17");
  });

  it("keeps every line, keys with spaces included", () => {
    expect(Object.keys(info.fields)).toHaveLength(INFO.trim().split("\n").length);
    expect(info.fields["Unstoppable Jobs"]).toBe("0");
    expect(info.fields["Build info"]).toBe("2.6.12-1+deb12u4");
    expect(info.fields.Uptime).toBe("0d 0h00m38s");
  });

  it("does not depend on line order", () => {
    const reversed = INFO.trim().split("\n").reverse().join("\n");
    expect(parseInfo(reversed)).toEqual(info);
  });

  it("splits at the first colon only and allows an empty value", () => {
    const parsed = parseInfo("Name: HAProxy\nVersion: 2.6\nPid: 1\nNote: a: b\ndescription: \nbare:x\n");
    expect(parsed.fields.Note).toBe("a: b");
    expect(parsed.fields.description).toBe("");
    expect(parsed.fields.bare).toBe("x");
    expect(parsed.uptimeSeconds).toBeNull();
  });

  it.each(["Name", "Version", "Pid"])("rejects a reply without %s", (key) => {
    const text = INFO.split("\n")
      .filter((line) => !line.startsWith(`${key}:`))
      .join("\n");
    expectReplyError(() => parseInfo(text), "show info", `"${key}"`);
  });

  it.each(["abc", "-1", "", "3.5", "1e3"])("rejects Pid %j", (bad) => {
    const text = INFO.replace("Pid: 3456", `Pid: ${bad}`);
    expectReplyError(() => parseInfo(text), "show info", "line 7", "Pid", JSON.stringify(bad));
  });

  it("rejects a non-integer Uptime_sec", () => {
    const text = INFO.replace("Uptime_sec: 38", "Uptime_sec: 38s");
    expectReplyError(() => parseInfo(text), "show info", "line 9", "Uptime_sec", '"38s"');
  });

  it.each([
    ["Name: HAProxy\nno colon here\n", "line 2", "Key: value"],
    ["Name: HAProxy\nName: other\n", "line 2", "twice"],
    [": value\n", "line 1", "bad key"],
    ["Name: HAProxy\n  Version: 2.6\n", "line 2", "bad key"],
  ])("rejects a malformed line (%#)", (text, ...fragments) => {
    expectReplyError(() => parseInfo(text), "show info", ...fragments);
  });

  it("rejects text after the blank line that ends the reply", () => {
    expectReplyError(() => parseInfo(`${INFO}Name: again\n`), "show info", "after the blank line");
  });
});

describe("parseBackendList", () => {
  it("reads the captured reply", () => {
    expect(parseBackendList(BACKENDS)).toEqual(["be_app", "be_static", "be_plain", "be_empty"]);
  });

  it("gives [] for a header alone, with or without newlines", () => {
    expect(parseBackendList("# name\n\n")).toEqual([]);
    expect(parseBackendList("# name")).toEqual([]);
  });

  it("accepts every character HAProxy allows in a proxy name", () => {
    expect(parseBackendList("# name\nA-z_0.9:x\n")).toEqual(["A-z_0.9:x"]);
  });

  it.each([
    ["", "line 1", "empty reply"],
    ["name\nbe_app\n", "line 1", '"name"'],
    ["# names\nbe_app\n", "line 1", '"# names"'],
    ["# name\nbe app\n", "line 2", '"be app"'],
    ["# name\nbe_app\nbe;x\n", "line 3", "not a backend name"],
    ["# name\nbe_app\nbe_app\n", "line 3", "twice"],
    ["# name\nbe_app\n\nbe_other\n", "line 4", "after the blank line"],
  ])("rejects a malformed reply (%#)", (text, ...fragments) => {
    expectReplyError(() => parseBackendList(text), "show backend", ...fragments);
  });
});

const PARSERS: ReadonlyArray<[string, (text: string) => unknown]> = [
  ["show servers state", parseServersState],
  ["show stat", parseStatCsv],
  ["show info", parseInfo],
  ["show backend", parseBackendList],
];

const REPLIES: Readonly<Record<string, string>> = {
  "show servers state": SERVERS_STATE,
  "show stat": STAT,
  "show info": INFO,
  "show backend": BACKENDS,
};

describe("any input string", () => {
  const garbage = [
    "",
    "\n",
    "\n\n\n",
    " ",
    "\t\r\n",
    "Unknown command: 'show servers stat'\n  help [<command>] : list matching or all commands\n\n",
    "Permission denied\n\n",
    "Can't find backend.\n\n",
    "Require 'backend/server'.\n",
    "> ",
    "#",
    "# ",
    "\u0000\u0001\u0002\uffff\ud800",
    "😀: 😀\n",
    "1\n#\n",
    ",".repeat(5000),
    "x".repeat(100_000),
    "1\n# ".padEnd(50_000, " "),
  ];

  it.each(PARSERS)("%s throws ReplyParseError on garbage", (command, parse) => {
    for (const text of garbage) expectReplyError(() => parse(text), command);
  });

  it.each(PARSERS)("%s rejects the reply to every other command", (command, parse) => {
    for (const [other, reply] of Object.entries(REPLIES)) {
      if (other !== command) expectReplyError(() => parse(reply), command);
    }
  });

  it.each(PARSERS)("%s throws nothing but ReplyParseError on random text", (_, parse) => {
    const random = seededRandom(0x5eed);
    const alphabet = ["\n", " ", ",", "#", ":", "-", "0", "1", "9", "a", "Z", "\t", "\r", "é", "\u0000", "# ", "1\n"];
    for (let i = 0; i < 3000; i++) {
      const length = Math.floor(random() * 60);
      let text = "";
      for (let j = 0; j < length; j++) text += alphabet[Math.floor(random() * alphabet.length)] ?? "";
      const error = caught(() => parse(text));
      if (error !== undefined) expect(error).toBeInstanceOf(ReplyParseError);
    }
  });

  it.each(PARSERS)("%s throws nothing but ReplyParseError on mutated real replies", (command, parse) => {
    const random = seededRandom(0xbad5eed);
    const original = REPLIES[command] ?? "";
    const noise = ["\n", " ", ",", ":", "-", "x", "7", "", "\n\n", "# "];
    let thrown = 0;
    for (let i = 0; i < 400; i++) {
      let text = original;
      for (let k = 0; k < 1 + Math.floor(random() * 3); k++) {
        const at = Math.floor(random() * (text.length + 1));
        const cut = Math.floor(random() * 3);
        text = text.slice(0, at) + (noise[Math.floor(random() * noise.length)] ?? "") + text.slice(at + cut);
      }
      const error = caught(() => parse(text));
      if (error !== undefined) {
        expect(error).toBeInstanceOf(ReplyParseError);
        thrown++;
      }
    }
    // The mutations must actually hit the parser's checks, or this test proves nothing.
    expect(thrown).toBeGreaterThan(100);
  });
});
