import { readFileSync } from "node:fs";
import fc from "fast-check";
import { expect } from "vitest";
import type { InvalidInputError } from "../../agent/errors.js";
import { addressSchema, asName, asObservedAddress, asPort, endpointKey, type Address, type Port } from "../../agent/model/values.js";

/*
 * Generators and checks the fuzz properties share. Every property runs with a fixed seed, so
 * a run is the same on every machine; fast-check prints the seed and the shrunk counterexample
 * of a failure, to replay it with `{ seed, path }`.
 */

export function fixture(name: string): string {
  return readFileSync(new URL(`../fixtures/haproxy-2.6/${name}.txt`, import.meta.url), "utf8");
}

type ErrorClass = abstract new (...args: never[]) => Error;

type Outcome<T> = { ok: true; value: T } | { ok: false; error: Error };

/** What `run` gave, or the error it threw if it is one of `allowed`; anything else is rethrown, failing the property. */
export function outcome<T>(run: () => T, ...allowed: ErrorClass[]): Outcome<T> {
  try {
    return { ok: true, value: run() };
  } catch (error) {
    if (allowed.some((type) => error instanceof type)) return { ok: false, error: error as Error };
    throw error;
  }
}

/** Characters that split a Runtime API command, a reply or a header, or that no parser expects. */
const HOSTILE_PIECES = [
  ";",
  "\n",
  "\r",
  "\0",
  " ",
  "  ",
  "\t",
  "\\",
  "'",
  '"',
  "#",
  ",",
  ":",
  "/",
  "[",
  "]",
  "-",
  "%",
  "> ",
  "\n> ",
  "\n\n",
  "é",
  "\u202e",
  "😀",
  "\ud800",
  "\ufeff",
  "0.0.0.0",
  "::",
  "::ffff:10.0.0.1",
  "fe80::1%eth0",
  "1e3",
  "-1",
  "0x10",
  "65536",
  "99999",
  "9007199254740993",
  "99999999999999999999999999999999",
  "NaN",
  "Infinity",
  "__proto__",
  "constructor",
  "toString",
];

/** Short text built from hostile pieces and random characters. */
export const hostileText: fc.Arbitrary<string> = fc
  .array(fc.oneof(fc.constantFrom(...HOSTILE_PIECES), fc.string({ maxLength: 6 }), fc.nat().map(String)), { maxLength: 6 })
  .map((parts) => parts.join(""));

/** Hostile text, and now and then a value far longer than anything the parsers expect. */
export const hostileValue: fc.Arbitrary<string> = fc.oneof(
  { weight: 20, arbitrary: hostileText },
  { weight: 1, arbitrary: fc.constantFrom("a".repeat(10_000), "9".repeat(400), "1.".repeat(5_000), ";".repeat(1_000)) },
);

/**
 * Values one step from valid: addresses HAProxy would never print (placeholders, upper case,
 * zero-padded, mapped, zoned, out of range), names with one stray character, numbers at the edges.
 */
const nearlyValid = fc.constantFrom(
  "0.0.0.0",
  "::",
  "2001:DB8::1",
  "2001:0db8::1",
  "2001:db8:0:0:0:0:0:1",
  "::ffff:10.0.0.1",
  "::FFFF:A00:1",
  "10.0.0.256",
  "010.0.0.1",
  "1.2.3",
  "fe80::1%eth0",
  "[::1]",
  "10.0.0.1:80",
  "srv 1",
  "srv;1",
  "srv/1",
  "a".repeat(65),
  "-",
  "0",
  "65536",
);

/** A hostile value, or one that is nearly valid. */
export const edgeValue: fc.Arbitrary<string> = fc.oneof(hostileValue, nearlyValid);

// Any UTF-16 code unit: NUL, controls, lone surrogates. fast-check's own "binary" unit costs
// seconds per few hundred strings, as much as every property of a file together.
const codeUnit = fc.integer({ min: 0, max: 0xffff }).map((code) => String.fromCharCode(code));

/** Text of any kind: binary (NUL, lone surrogates), unicode, or drawn from `alphabet` so that structure shows up. */
export function garbage(alphabet: string, maxLength = 400): fc.Arbitrary<string> {
  const characters = [...new Set(alphabet)];
  return fc.oneof(
    fc.string({ unit: codeUnit, maxLength }),
    fc.string({ unit: "grapheme", maxLength }),
    fc.string({ unit: fc.constantFrom(...characters), maxLength }),
  );
}

/* ---------------------------------------------------------------- text mutations */

/**
 * A position is drawn as a share of the length, so that one mutation fits texts of any length.
 * Unbiased integers: fast-check draws doubles evenly over their bit patterns (nearly all tiny)
 * and biased integers mostly at the ends of the range.
 */
const SHARES = 1_000_000;
const position = fc.noBias(fc.integer({ min: 0, max: SHARES - 1 }));

function at(share: number, length: number): number {
  return Math.floor((share / SHARES) * length);
}

/** Past a port, past a C int, past 32 bits, past 2^53, past a double. */
const HUGE_NUMBER = fc.constantFrom("65536", "2147483648", "4294967296", "9007199254740993", "9".repeat(400));

type TextMutation =
  | { kind: "insert"; at: number; text: string }
  | { kind: "delete"; at: number; length: number }
  | { kind: "truncate"; at: number }
  | { kind: "replace-word"; at: number; text: string }
  | { kind: "replace-number"; at: number; digits: string }
  | { kind: "drop-line"; at: number }
  | { kind: "duplicate-line"; at: number }
  | { kind: "swap-lines"; a: number; b: number };

// Weighted towards changes that keep the shape of a reply, so that many runs get past the
// first checks to the values behind them.
const textMutation: fc.Arbitrary<TextMutation> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("insert" as const), at: position, text: hostileValue }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("delete" as const), at: position, length: fc.integer({ min: 1, max: 40 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("truncate" as const), at: position }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("replace-word" as const), at: position, text: hostileValue }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("replace-number" as const), at: position, digits: HUGE_NUMBER }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("drop-line" as const), at: position }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("duplicate-line" as const), at: position }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("swap-lines" as const), a: position, b: position }) },
);

function mutateText(text: string, mutation: TextMutation): string {
  switch (mutation.kind) {
    case "insert": {
      const i = at(mutation.at, text.length + 1);
      return text.slice(0, i) + mutation.text + text.slice(i);
    }
    case "delete": {
      const i = at(mutation.at, text.length);
      return text.slice(0, i) + text.slice(i + mutation.length);
    }
    case "truncate":
      return text.slice(0, at(mutation.at, text.length));
    case "replace-word": {
      // The run of non-blank characters around the position: a value, whatever the format.
      const i = at(mutation.at, text.length);
      const start = text.slice(0, i).search(/\S*$/);
      const end = i + text.slice(i).search(/\s|$/);
      return text.slice(0, start) + mutation.text + text.slice(end);
    }
    case "replace-number": {
      // Any number of the text, each as likely as any other.
      const numbers = [...text.matchAll(/[0-9]+/g)];
      const found = numbers[at(mutation.at, numbers.length)];
      return found === undefined ? text : text.slice(0, found.index) + mutation.digits + text.slice(found.index + found[0].length);
    }
    default:
      return mutateLines(text.split("\n"), mutation).join("\n");
  }
}

function mutateLines(lines: string[], mutation: Exclude<TextMutation, { kind: "insert" | "delete" | "truncate" | "replace-word" | "replace-number" }>): string[] {
  const copy = [...lines];
  switch (mutation.kind) {
    case "drop-line":
      copy.splice(at(mutation.at, copy.length), 1);
      return copy;
    case "duplicate-line": {
      const i = at(mutation.at, copy.length);
      copy.splice(i, 0, copy[i] ?? "");
      return copy;
    }
    case "swap-lines": {
      const a = at(mutation.a, copy.length);
      const b = at(mutation.b, copy.length);
      [copy[a], copy[b]] = [copy[b] ?? "", copy[a] ?? ""];
      return copy;
    }
  }
}

/**
 * One number of a reply replaced, and nothing else, so that the reply still parses up to that
 * value: by 0, by digits past every range a parser checks, or by any digits.
 */
export function replacedNumber(texts: readonly string[]): fc.Arbitrary<string> {
  const digits = fc.oneof(HUGE_NUMBER, fc.constant("0"), fc.stringMatching(/^[0-9]{1,25}$/));
  return fc.tuple(fc.constantFrom(...texts), position, digits).map(([text, at, replacement]) => mutateText(text, { kind: "replace-number", at, digits: replacement }));
}

/** `base` with up to `max` text mutations applied in turn. */
export function mutatedText(base: fc.Arbitrary<string>, max = 3): fc.Arbitrary<string> {
  return fc.tuple(base, fc.array(textMutation, { minLength: 1, maxLength: max })).map(([text, mutations]) => mutations.reduce(mutateText, text));
}

/* ---------------------------------------------------------------- table mutations */

/**
 * A reply made of a header line naming columns and rows of fields (`show servers state`,
 * `show stat`), so that columns can be dropped, doubled and moved as HAProxy versions do.
 */
export interface TableFormat {
  /** Lines before the header (`1`, the format version, in `show servers state`). */
  preamble: number;
  separator: string;
  /** What every line ends with (`,` in CSV). */
  lineEnd: string;
}

interface Table {
  preamble: string[];
  names: string[];
  rows: string[][];
}

const HEADER_PREFIX = "# ";

export function readTable(text: string, format: TableFormat): Table {
  const lines = text.split("\n");
  const end = lines.indexOf("", format.preamble);
  const split = (line: string): string[] => line.slice(0, line.length - format.lineEnd.length).split(format.separator);
  return {
    preamble: lines.slice(0, format.preamble),
    names: split((lines[format.preamble] ?? "").slice(HEADER_PREFIX.length)),
    rows: lines.slice(format.preamble + 1, end === -1 ? undefined : end).map(split),
  };
}

export function writeTable(table: Table, format: TableFormat): string {
  const line = (fields: readonly string[]): string => fields.join(format.separator) + format.lineEnd;
  return [...table.preamble, HEADER_PREFIX + line(table.names), ...table.rows.map(line), "", ""].join("\n");
}

/** Moves columns about: the same reply as HAProxy could print it in another version. */
export function permuteColumns(table: Table, order: readonly number[]): Table {
  const pick = (fields: readonly string[]): string[] => order.map((i) => fields[i] ?? "");
  return { preamble: table.preamble, names: pick(table.names), rows: table.rows.map(pick) };
}

type TableMutation =
  | { kind: "drop-column"; at: number }
  | { kind: "duplicate-column"; at: number }
  | { kind: "move-column"; from: number; to: number }
  | { kind: "set-field"; row: number; column: number; value: string }
  | { kind: "drop-field"; row: number; column: number }
  | { kind: "drop-row"; row: number }
  | { kind: "duplicate-row"; row: number };

const tableMutation: fc.Arbitrary<TableMutation> = fc.oneof(
  fc.record({ kind: fc.constant("drop-column" as const), at: position }),
  fc.record({ kind: fc.constant("duplicate-column" as const), at: position }),
  fc.record({ kind: fc.constant("move-column" as const), from: position, to: position }),
  fc.record({ kind: fc.constant("set-field" as const), row: position, column: position, value: edgeValue }),
  fc.record({ kind: fc.constant("drop-field" as const), row: position, column: position }),
  fc.record({ kind: fc.constant("drop-row" as const), row: position }),
  fc.record({ kind: fc.constant("duplicate-row" as const), row: position }),
);

function mutateTable(table: Table, mutation: TableMutation): Table {
  const columns = table.names.length;
  const everyLine = (edit: (fields: string[]) => string[]): Table => ({ preamble: table.preamble, names: edit([...table.names]), rows: table.rows.map((row) => edit([...row])) });
  const oneRow = (share: number, edit: (fields: string[]) => string[]): Table => {
    const r = at(share, table.rows.length);
    return { ...table, rows: table.rows.map((row, i) => (i === r ? edit([...row]) : row)) };
  };
  switch (mutation.kind) {
    case "drop-column":
      return everyLine((fields) => fields.filter((_, i) => i !== at(mutation.at, columns)));
    case "duplicate-column":
      return everyLine((fields) => [...fields, fields[at(mutation.at, columns)] ?? ""]);
    case "move-column":
      return everyLine((fields) => {
        const [moved] = fields.splice(at(mutation.from, columns), 1);
        fields.splice(at(mutation.to, columns), 0, moved ?? "");
        return fields;
      });
    case "set-field":
      return oneRow(mutation.row, (fields) => fields.map((field, i) => (i === at(mutation.column, columns) ? mutation.value : field)));
    case "drop-field":
      return oneRow(mutation.row, (fields) => fields.filter((_, i) => i !== at(mutation.column, columns)));
    case "drop-row":
      return { ...table, rows: table.rows.filter((_, i) => i !== at(mutation.row, table.rows.length)) };
    case "duplicate-row": {
      const r = at(mutation.row, table.rows.length);
      return { ...table, rows: table.rows.flatMap((row, i) => (i === r ? [row, row] : [row])) };
    }
  }
}

/**
 * One field of one row of one of `fixtures` replaced by an edge value, and nothing else, so that
 * the reply still parses up to it; in one of `columns` when given, else in any column.
 */
export function replacedField(fixtures: readonly string[], format: TableFormat, columns: readonly string[] = []): fc.Arbitrary<string> {
  return fc.tuple(fc.constantFrom(...fixtures), position, position, edgeValue).map(([text, row, share, value]) => {
    const table = readTable(text, format);
    const named = columns.map((name) => table.names.indexOf(name)).filter((index) => index !== -1);
    const column = named.length === 0 ? at(share, table.names.length) : named[at(share, named.length)]!;
    return writeTable({ ...table, rows: table.rows.map((fields, i) => (i === at(row, table.rows.length) ? fields.map((field, j) => (j === column ? value : field)) : fields)) }, format);
  });
}

/** One of `fixtures`, its table mutated, then its text: from near-valid replies to broken ones. */
export function mutatedReply(fixtures: readonly string[], format: TableFormat): fc.Arbitrary<string> {
  return fc
    .tuple(fc.constantFrom(...fixtures), fc.array(tableMutation, { maxLength: 4 }), fc.array(textMutation, { maxLength: 2 }))
    .map(([text, tableMutations, textMutations]) =>
      textMutations.reduce(mutateText, writeTable(tableMutations.reduce(mutateTable, readTable(text, format)), format)),
    );
}

/* ---------------------------------------------------------------- JSON mutations */

/** Which node of a JSON value to change (each node as likely as any other), and how. */
type JsonMutation = { target: number; action: "set"; value: unknown } | { target: number; action: "delete" } | { target: number; action: "duplicate" };

/** Values that are wrong in some field of every schema here. */
export const hostileJson: fc.Arbitrary<unknown> = fc.oneof(
  edgeValue,
  fc.constantFrom(0, -1, 1.5, 65535, 65536, 256, 257, -0, 1e308, Number.MAX_SAFE_INTEGER + 2, null, true, [], {}),
  fc.integer(),
  fc.jsonValue({ maxDepth: 2 }),
);

const jsonMutation: fc.Arbitrary<JsonMutation> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ target: position, action: fc.constant("set" as const), value: hostileJson }) },
  { weight: 1, arbitrary: fc.record({ target: position, action: fc.constant("delete" as const) }) },
  { weight: 1, arbitrary: fc.record({ target: position, action: fc.constant("duplicate" as const) }) },
);

type JsonPath = (string | number)[];

function isContainer(value: unknown): value is Record<string, unknown> | unknown[] {
  return typeof value === "object" && value !== null;
}

function entriesOf(value: Record<string, unknown> | unknown[]): [string | number, unknown][] {
  return Array.isArray(value) ? value.map((item, i) => [i, item]) : Object.entries(value);
}

/** Every node's path, the root's first. */
function pathsOf(value: unknown, prefix: JsonPath = []): JsonPath[] {
  if (!isContainer(value)) return [prefix];
  return [prefix, ...entriesOf(value).flatMap(([key, child]) => pathsOf(child, [...prefix, key]))];
}

/** A copy of `value` with the node at `path` replaced, removed or doubled (the root can only be replaced). */
function edit(value: unknown, path: JsonPath, mutation: JsonMutation): unknown {
  const [key, ...rest] = path;
  if (key === undefined || !isContainer(value)) return mutation.action === "set" ? mutation.value : value;
  const entries = entriesOf(value);
  const changed = entries.flatMap(([name, child]): [string | number, unknown][] => {
    if (name !== key) return [[name, child]];
    if (rest.length > 0 || mutation.action === "set") return [[name, edit(child, rest, mutation)]];
    if (mutation.action === "delete") return [];
    return [
      [name, child],
      [typeof name === "number" ? name : `${name}2`, child],
    ];
  });
  return Array.isArray(value) ? changed.map(([, child]) => child) : Object.fromEntries(changed);
}

function mutateJson(value: unknown, mutation: JsonMutation): unknown {
  const paths = pathsOf(value);
  return edit(value, paths[at(mutation.target, paths.length)] ?? [], mutation);
}

export function mutatedJson(base: unknown, max = 3): fc.Arbitrary<unknown> {
  return fc.array(jsonMutation, { minLength: 1, maxLength: max }).map((mutations) => mutations.reduce(mutateJson, base));
}

/* ---------------------------------------------------------------- what may reach HAProxy */

/**
 * Every server that comes out of a validated input (a desired-state file, a push, a Consul
 * answer) as the Runtime API may take it: a canonical IP literal that is not a placeholder, a
 * port and a weight in range, one server per address:port. Checked with the plain guards of
 * values.ts and the address schema's own canonical form, not with the schema under test.
 */
export function expectServable(servers: readonly { address: string; port: number; weight?: number | undefined }[]): void {
  const keys = new Set<string>();
  for (const { address, port, weight } of servers) {
    expect(asObservedAddress(address), `address ${JSON.stringify(address)}`).toBe(address);
    expect(addressSchema.parse(address), `address ${JSON.stringify(address)} is canonical`).toBe(address);
    expect(asPort(port), `port ${port}`).toBe(port);
    if (weight !== undefined) expect(Number.isInteger(weight) && weight >= 0 && weight <= 256, `weight ${weight}`).toBe(true);
    keys.add(endpointKey(address as Address, port as Port));
  }
  expect(keys.size, "one server per address:port").toBe(servers.length);
}

export function expectName(name: string): void {
  expect(asName(name), `name ${JSON.stringify(name)}`).toBe(name);
}

/** A refusal names where and what: every issue has a path (possibly "" for the whole input) and a message. */
export function expectIssues(error: InvalidInputError): void {
  expect(error.issues.length).toBeGreaterThan(0);
  for (const issue of error.issues) {
    expect(typeof issue.path).toBe("string");
    expect(typeof issue.message === "string" && issue.message !== "", JSON.stringify(issue)).toBe(true);
  }
}
