import { ReplyParseError } from "../../errors.js";

/**
 * Pieces the reply parsers share. Every failure is a ReplyParseError naming the line, so that
 * a caller never sees a TypeError from a reply it could not read, nor a partial result.
 */

/** Long garbage (a help text, binary) would drown the message; the start is enough to recognise it. */
const QUOTE_LIMIT = 60;

export function quote(text: string): string {
  const shown = text.length > QUOTE_LIMIT ? `${text.slice(0, QUOTE_LIMIT)}...` : text;
  return JSON.stringify(shown);
}

export function lineError(command: string, lineNumber: number, detail: string): ReplyParseError {
  return new ReplyParseError(command, `line ${lineNumber}: ${detail}`);
}

/**
 * The lines of one reply, up to the blank line (or end of text) that ends it. Text after that
 * blank line means two replies ran together, i.e. the framing is off, so nothing is trusted.
 */
export function replyLines(command: string, text: string): string[] {
  const lines = text.split("\n");
  const end = lines.indexOf("");
  if (end === -1) return lines;
  for (let i = end + 1; i < lines.length; i++) {
    const line = lines[i];
    if (line !== undefined && line !== "") {
      throw lineError(command, i + 1, `text after the blank line that ends the reply: ${quote(line)}`);
    }
  }
  return lines.slice(0, end);
}

const INTEGER = /^[0-9]+$/;

/** A non-negative decimal integer; HAProxy prints no sign, exponent or spaces in the fields we read. */
export function readInteger(command: string, lineNumber: number, name: string, raw: string): number {
  const value = INTEGER.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(value)) {
    throw lineError(command, lineNumber, `${name}: expected a non-negative integer, got ${quote(raw)}`);
  }
  return value;
}

export interface Header {
  readonly lineNumber: number;
  readonly names: readonly string[];
  readonly index: ReadonlyMap<string, number>;
}

/** Rejects empty and repeated names: either would make a lookup by name ambiguous. */
export function readHeader(command: string, lineNumber: number, names: readonly string[]): Header {
  const index = new Map<string, number>();
  names.forEach((name, position) => {
    if (name === "") throw lineError(command, lineNumber, `empty column name at position ${position + 1}`);
    if (index.has(name)) throw lineError(command, lineNumber, `column ${quote(name)} appears twice`);
    index.set(name, position);
  });
  return { lineNumber, names, index };
}

/** Resolves the columns a parser needs once, so each row is read by index. */
export function columnIndexes<const N extends string>(
  command: string,
  header: Header,
  names: readonly N[],
): Readonly<Record<N, number>> {
  const found = {} as Record<N, number>;
  for (const name of names) {
    const position = header.index.get(name);
    if (position === undefined) throw lineError(command, header.lineNumber, `header has no ${quote(name)} column`);
    found[name] = position;
  }
  return found;
}

/**
 * The base of a parsed row: its typed fields are assigned onto an instance, and every column
 * is built only when asked for. A record of all 128 `show stat` columns for each of 10,000
 * rows costs more than the rest of the parse; and a getter on the prototype, unlike one in an
 * object literal, keeps rows as fast objects.
 */
export class LazyColumns {
  readonly #row: TableRow;

  constructor(row: TableRow) {
    this.#row = row;
  }

  get columns(): Readonly<Record<string, string>> {
    return this.#row.columns();
  }
}

/** One data line already split into exactly as many fields as the header has names. */
export class TableRow {
  private constructor(
    private readonly command: string,
    private readonly header: Header,
    readonly lineNumber: number,
    private readonly fields: readonly string[],
  ) {}

  static of(command: string, header: Header, lineNumber: number, fields: readonly string[]): TableRow {
    if (fields.length !== header.names.length) {
      throw lineError(
        command,
        lineNumber,
        `expected ${header.names.length} fields as in the header, got ${fields.length}`,
      );
    }
    return new TableRow(command, header, lineNumber, fields);
  }

  text(position: number): string {
    const value = this.fields[position];
    // Unreachable after the count check in `of`; kept so a bad index cannot surface as a TypeError.
    if (value === undefined) throw lineError(this.command, this.lineNumber, `no field at position ${position + 1}`);
    return value;
  }

  integer(position: number): number {
    return readInteger(this.command, this.lineNumber, this.nameAt(position), this.text(position));
  }

  /** `absent` is the placeholder HAProxy prints for "no value": `-` in server state, empty in CSV. */
  optionalInteger(position: number, absent: string): number | null {
    const raw = this.text(position);
    return raw === absent ? null : this.integer(position);
  }

  optionalText(position: number, absent: string): string | null {
    const raw = this.text(position);
    return raw === absent ? null : raw;
  }

  /** A prototype-less record, so a column named like `__proto__` or `toString` is just a column. */
  columns(): Readonly<Record<string, string>> {
    const record = Object.create(null) as Record<string, string>;
    this.header.names.forEach((name, position) => {
      record[name] = this.text(position);
    });
    return record;
  }

  private nameAt(position: number): string {
    return this.header.names[position] ?? `column ${position + 1}`;
  }
}
