import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ReplyParseError } from "../../agent/errors.js";
import { parseReloadReply } from "../../agent/hybrid/reload-reply.js";
import { parseMasterStatus, parseShowProc, type ProcessEntry, type ShowProc } from "../../agent/hybrid/show-proc.js";
import { addressSchema, nameSchema, portSchema } from "../../agent/model/values.js";
import { buildObservedState } from "../../agent/reconcile/observed-state.js";
import { RuntimeCommand } from "../../agent/runtime/commands.js";
import { parseBackendList } from "../../agent/runtime/parsers/backend-list.js";
import { parseInfo } from "../../agent/runtime/parsers/info.js";
import { parseServersState, type ServerStateRow } from "../../agent/runtime/parsers/servers-state.js";
import { parseStatCsv, type StatRow } from "../../agent/runtime/parsers/stat-csv.js";
import { isAddressChangeReport } from "../../agent/runtime/set-addr-reply.js";
import { caught } from "../support/helpers.js";
import { fixture, garbage, hostileText, mutatedReply, mutatedText, outcome, permuteColumns, readTable, replacedField, replacedNumber, writeTable, type TableFormat } from "./support.js";

/*
 * Every reader of a Runtime API or master CLI reply, fed garbage and mutations of the replies
 * HAProxy 2.6 really gave: it returns, or throws ReplyParseError, and whatever it returns is
 * well-typed; what reaches a command (names, addresses, ports) passes the model's guards.
 */

const STATE_FORMAT: TableFormat = { preamble: 1, separator: " ", lineEnd: "" };
const CSV_FORMAT: TableFormat = { preamble: 0, separator: ",", lineEnd: "," };

const SERVERS_STATE = ["show-servers-state", "show-servers-state-one-backend", "show-servers-state-empty-backend"].map(fixture);
const STAT = ["show-stat", "show-stat-one-backend", "show-stat-listeners", "show-stat-checks-falling"].map(fixture);
const BACKENDS = fixture("show-backend");
const INFO = fixture("show-info");
const SHOW_PROC = [
  "master-show-proc",
  "master-show-proc-old-workers",
  "master-show-proc-programs",
  "master-show-proc-recovered",
  "master-show-proc-reload-failed",
  "master-show-proc-reload-failed-twice",
  "master-show-proc-on-admin-socket",
].map(fixture);
const MASTER_STATUS = ["master-prompt-show-proc", "master-prompt-show-proc-reload-failed"].map(fixture);

/** The characters of every fixture: garbage made of them looks like a reply often enough to get past the first checks. */
const REPLY_ALPHABET = [...SERVERS_STATE, ...STAT, BACKENDS, INFO, ...SHOW_PROC].join("") + "\0;\r";

function expectCount(value: number | null): void {
  if (value !== null) expect(Number.isSafeInteger(value) && value >= 0, `${value} is a count`).toBe(true);
}

/** One whitespace-free token, as a space- or comma-separated field must be. */
function expectField(text: string | null, separator: string): void {
  if (text !== null) expect(text.includes(separator) || text.includes("\n"), JSON.stringify(text)).toBe(false);
}

function checkServersState(rows: readonly ServerStateRow[]): void {
  for (const row of rows) {
    // The agent asks `show stat` about a draining server by these ids.
    RuntimeCommand.showServerStat(row.backendId, row.serverId);
    for (const count of [row.backendId, row.serverId, row.opState, row.adminState, row.userWeight, row.initialWeight, row.checkState]) expectCount(count);
    for (const text of [row.backend, row.server, row.address, row.fqdn]) expectField(text, " ");
    expect(row.port === null || row.port <= 65535, `port ${row.port}`).toBe(true);
    expectCount(row.port);
  }
}

function checkStat(rows: readonly StatRow[]): void {
  for (const row of rows) {
    for (const count of [row.type, row.currentSessions, row.weight]) expectCount(count);
    for (const text of [row.proxy, row.service, row.status, row.address, row.algorithm, row.checkStatus]) expectField(text, ",");
  }
}

/** What may be put in a command: a name, address or port that the desired state's own schemas accept as they are. */
function checkObserved(backends: readonly string[], servers: readonly ServerStateRow[], stats: readonly StatRow[]): void {
  for (const backend of buildObservedState(backends, servers, stats).values()) {
    if (backend.name !== null) expect(nameSchema.safeParse(backend.name).data).toBe(backend.name);
    for (const server of backend.servers) {
      if (server.name !== null) expect(nameSchema.safeParse(server.name).data).toBe(server.name);
      if (server.address !== null) expect(addressSchema.safeParse(server.address).data).toBe(server.address);
      if (server.port !== null) expect(portSchema.safeParse(server.port).data).toBe(server.port);
    }
  }
}

function parsedOrRefused<T>(parse: (text: string) => T, check: (value: T) => void): (text: string) => void {
  return (text) => {
    const result = outcome(() => parse(text), ReplyParseError);
    if (result.ok) check(result.value);
  };
}

interface TableReply<R extends { columns: Readonly<Record<string, string>> }> {
  command: string;
  fixtures: readonly string[];
  format: TableFormat;
  parse: (text: string) => R[];
  check: (rows: readonly R[]) => void;
  /** Each property's seed is this plus its number. */
  seed: number;
}

/** The properties every reply made of a header and rows must have. */
function describeTableReply<R extends { columns: Readonly<Record<string, string>> }>({ command, fixtures, format, parse, check, seed }: TableReply<R>): void {
  describe(command, () => {
    const property = parsedOrRefused(parse, check);

    it("refuses garbage with ReplyParseError, or reads well-typed rows", () => {
      fc.assert(fc.property(garbage(REPLY_ALPHABET), property), { seed: seed + 1, numRuns: 300 });
    });

    it("reads mutations of real replies (columns dropped, doubled, moved; fields hostile; lines cut) the same way", () => {
      fc.assert(fc.property(mutatedReply(fixtures, format), property), { seed: seed + 2, numRuns: 500 });
    });

    it("reads every number of a real reply, replaced by 0 or digits past its range, as a value in range, or refuses it", () => {
      fc.assert(fc.property(replacedNumber(fixtures), property), { seed: seed + 3, numRuns: 300 });
    });

    it("finds columns by name: any order of the columns gives the same rows", () => {
      const text = fixtures[0]!;
      const table = readTable(text, format);
      const expected = parse(text);
      const order = fc.shuffledSubarray(table.names.map((_, i) => i), { minLength: table.names.length });
      fc.assert(
        fc.property(order, (columns) => {
          const rows = parse(writeTable(permuteColumns(table, columns), format));
          expect(rows).toEqual(expected);
          expect(rows.map((row) => row.columns)).toEqual(expected.map((row) => row.columns));
        }),
        { seed: seed + 4, numRuns: 50 },
      );
    });
  });
}

describeTableReply({ command: "show servers state", fixtures: SERVERS_STATE, format: STATE_FORMAT, parse: parseServersState, check: checkServersState, seed: 0x5e7e0 });
describeTableReply({ command: "show stat", fixtures: STAT, format: CSV_FORMAT, parse: parseStatCsv, check: checkStat, seed: 0x57a70 });

describe("show servers state: ids", () => {
  it("refuses a proxy or server id of 0 or past a C int (found by the number property above)", () => {
    const withIds = (backendId: string, serverId: string): string => SERVERS_STATE[1]!.replace("\n5 be_plain 1 web1 ", `\n${backendId} be_plain ${serverId} web1 `);
    expect(() => parseServersState(withIds("0", "1"))).toThrow(new ReplyParseError("show servers state", "line 3: be_id: 0 is not an id in 1..2147483647"));
    expect(() => parseServersState(withIds("5", "2147483648"))).toThrow(new ReplyParseError("show servers state", "line 3: srv_id: 2147483648 is not an id in 1..2147483647"));
    expect(parseServersState(withIds("2147483647", "2147483647"))).toMatchObject([{ backendId: 2147483647, serverId: 2147483647 }]);
  });
});

describe("show backend", () => {
  function checkNames(names: readonly string[]): void {
    expect(new Set(names).size).toBe(names.length);
    for (const name of names) expect(/^[^\s;\\\0]+$/.test(name), JSON.stringify(name)).toBe(true);
  }

  it("refuses garbage and mutations with ReplyParseError, or lists unique single-word names", () => {
    const replies = fc.oneof(garbage(REPLY_ALPHABET), mutatedText(fc.constant(BACKENDS)));
    fc.assert(fc.property(replies, parsedOrRefused(parseBackendList, checkNames)), { seed: 0xbac1, numRuns: 500 });
  });
});

describe("what the agent reads back (show backend + show servers state + show stat)", () => {
  it("lets through only names, addresses and ports the desired state's schemas accept", () => {
    // Mostly intact replies, so that most runs get to join them; the values in question are the servers'.
    const mostlyIntact = (text: string, mutated: fc.Arbitrary<string>): fc.Arbitrary<string> => fc.oneof({ weight: 3, arbitrary: fc.constant(text) }, { weight: 1, arbitrary: mutated });
    const servers = fc.oneof(mutatedReply(SERVERS_STATE, STATE_FORMAT), { weight: 2, arbitrary: replacedField(SERVERS_STATE, STATE_FORMAT, ["be_name", "srv_name", "srv_addr", "srv_port"]) });
    const replies = fc.tuple(mostlyIntact(BACKENDS, mutatedText(fc.constant(BACKENDS))), servers, mostlyIntact(STAT[0]!, mutatedReply(STAT, CSV_FORMAT)));
    fc.assert(
      fc.property(replies, ([backendText, stateText, statText]) => {
        const read = outcome(() => [parseBackendList(backendText), parseServersState(stateText), parseStatCsv(statText)] as const, ReplyParseError);
        if (read.ok) checkObserved(...read.value);
      }),
      { seed: 0x0b5e, numRuns: 500 },
    );
  });
});

describe("what the agent reads back: addresses", () => {
  it("takes an address only in the form HAProxy prints it (found by the property above)", () => {
    const state = (address: string): ServerStateRow[] => parseServersState(SERVERS_STATE[1]!.replace(" web1 127.0.0.1 ", ` web1 ${address} `));
    const observed = (address: string) => buildObservedState(["be_plain"], state(address), []).get("be_plain")?.servers[0]?.address;
    for (const address of ["2001:DB8::1", "2001:0db8::1", "2001:db8:0:0:0:0:0:1", "::FFFF:A00:1"]) expect(observed(address), address).toBeNull();
    for (const address of ["2001:db8::1", "127.0.0.1"]) expect(observed(address)).toBe(address);
    // IPv4-mapped: the IPv4 host, the form desired addresses take (values.ts).
    expect(observed("::ffff:10.0.0.1")).toBe("10.0.0.1");
  });
});

describe("show info", () => {
  it("refuses garbage and mutations with ReplyParseError, or reads single-line fields and counts", () => {
    const replies = fc.oneof(garbage(REPLY_ALPHABET), mutatedText(fc.constant(INFO)), replacedNumber([INFO]));
    const check = (info: ReturnType<typeof parseInfo>): void => {
      expectCount(info.pid);
      expectCount(info.uptimeSeconds);
      for (const [key, value] of Object.entries(info.fields)) {
        expect(key.includes(":") || key.includes("\n"), JSON.stringify(key)).toBe(false);
        expect(value.includes("\n"), JSON.stringify(value)).toBe(false);
      }
    };
    fc.assert(fc.property(replies, parsedOrRefused(parseInfo, check)), { seed: 0x1f0, numRuns: 300 });
  });
});

describe("master CLI: show proc and its prompt", () => {
  function checkEntry(entry: ProcessEntry): void {
    for (const count of [entry.pid, entry.reloads, entry.uptimeSeconds, entry.relativePid]) expectCount(count);
    for (const text of [entry.type, entry.version]) expectField(text, " ");
  }

  function checkProc(proc: ShowProc): void {
    for (const count of [proc.master.pid, proc.master.reloads, proc.master.failedReloads, proc.master.uptimeSeconds]) expectCount(count);
    expectField(proc.master.version, " ");
    for (const entry of [...proc.workers, ...proc.oldWorkers, ...proc.programs, ...proc.oldPrograms]) checkEntry(entry);
  }

  it("refuses garbage and mutations of show proc with ReplyParseError, or reads counts and single-word values", () => {
    const replies = fc.oneof(garbage(REPLY_ALPHABET), mutatedText(fc.constantFrom(...SHOW_PROC)), replacedNumber(SHOW_PROC));
    fc.assert(fc.property(replies, parsedOrRefused(parseShowProc, checkProc)), { seed: 0x9a0c, numRuns: 1_000 });
  });

  it("refuses an uptime whose days make the seconds inexact or infinite (found by the property above)", () => {
    const withDays = (days: string): string => SHOW_PROC[0]!.replace("\n7955            master          0 [failed: 0]   0d", `\n7955            master          0 [failed: 0]   ${days}d`);
    for (const days of ["104249991375", "9".repeat(400)]) {
      const error = caught(() => parseShowProc(withDays(days)));
      expect(error).toBeInstanceOf(ReplyParseError);
      expect((error as Error).message).toMatch(/^cannot parse HAProxy's reply to 'show proc': line 2: uptime: "[0-9.]+(?:d00h00m00s)?" is out of range$/);
    }
    // The largest number of days whose seconds are still exact.
    expect(parseShowProc(withDays("104249991374")).master.uptimeSeconds).toBe(104249991374 * 86_400);
  });

  it("refuses garbage and mutations of prompt + show proc with ReplyParseError, or reads the prompt as printed", () => {
    const replies = fc.oneof(garbage(REPLY_ALPHABET), mutatedText(fc.constantFrom(...MASTER_STATUS)), replacedNumber(MASTER_STATUS));
    const check = (status: ReturnType<typeof parseMasterStatus>): void => {
      expect(status.prompt.text).toMatch(/^master(?:\[[A-Za-z]+\])*> $/);
      checkProc(status.proc);
    };
    fc.assert(fc.property(replies, parsedOrRefused(parseMasterStatus, check)), { seed: 0x9a0d, numRuns: 500 });
  });
});

describe("set server addr: a change report by meaning", () => {
  const quoted = fc.oneof(fc.ipV4(), fc.ipV6(), fc.integer({ min: 0, max: 65535 }).map(String));
  const clause = fc.oneof(
    fc.tuple(quoted, quoted).map(([from, to]) => ({ subject: "addr", text: `IP changed from '${from}' to '${to}'` })),
    fc.constant({ subject: "addr", text: "no need to change the addr" }),
    fc.tuple(quoted, quoted).map(([from, to]) => ({ subject: "port", text: `port changed from '${from}' to '${to}'` })),
    fc.constant({ subject: "port", text: "no need to change the port" }),
  );
  /** What every version prints: one clause per subject, in either order, then who asked. */
  const report = fc
    .tuple(clause, fc.option(clause, { nil: undefined }), fc.constantFrom(" by 'stats socket command'", " by 'DNS cache'", ""))
    .filter(([first, second]) => second === undefined || second.subject !== first.subject)
    .map(([first, second, by]) => [first.text, ...(second ? [second.text] : [])].join(", ") + by);

  it("takes every report made of known clauses as done, and nothing with more text around it", () => {
    fc.assert(
      fc.property(report, hostileText, fc.constantFrom("\n", ", ", " ", ""), (text, extra, glue) => {
        expect(isAddressChangeReport(text)).toBe(true);
        if (extra !== "") {
          expect(isAddressChangeReport(`${extra}${glue}${text}`)).toBe(false);
          // Only one more requester after a report without one could still read as a report.
          if (!/ by '[^']*'$/.test(`${glue}${extra}`)) expect(isAddressChangeReport(`${text}${glue}${extra}`)).toBe(false);
        }
      }),
      { seed: 0xadd5, numRuns: 1_000 },
    );
  });

  it("takes no garbage for a change report", () => {
    fc.assert(fc.property(fc.oneof(hostileText, garbage(REPLY_ALPHABET)), (text) => {
          expect(isAddressChangeReport(text)).toBe(false);
        }), { seed: 0xadd6, numRuns: 1_000 });
  });
});

describe("master CLI: the reply to reload", () => {
  const RELOAD_REPLIES = ["2.6", "2.8", "3.0", "3.2", "3.4"].flatMap((version) =>
    ["reload-cycle-1-reload-reply-success.txt", "reload-cycle-2-reload-reply-failure.txt"].map((name) => readFileSync(new URL(`../fixtures/haproxy-${version}/${name}`, import.meta.url), "utf8")),
  );

  it("refuses garbage and mutations with ReplyParseError, or reads a verdict whose failure always has a reason", () => {
    const replies = fc.oneof(garbage(REPLY_ALPHABET), mutatedText(fc.constantFrom(...RELOAD_REPLIES)), hostileText.map((text) => `Success=0\n--\n${text}`));
    const check = (reply: ReturnType<typeof parseReloadReply>): void => {
      expect(["no-verdict", "succeeded", "failed", "busy"]).toContain(reply.kind);
      if (reply.kind === "failed") expect(reply.reason.length).toBeGreaterThan(0);
    };
    fc.assert(fc.property(replies, parsedOrRefused(parseReloadReply, check)), { seed: 0x5e10ad, numRuns: 1_000 });
  });
});
