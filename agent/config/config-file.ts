import { readFile } from "node:fs/promises";
import { extname } from "node:path";
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document } from "yaml";
import type { z } from "zod";
import { InvalidInputError, type InputIssue } from "../errors.js";
import { issuesOf } from "../model/validate.js";
import { readProblem } from "../cli/read-input.js";

/*
 * Configuration files of both programs: YAML or JSON by extension, validated against a zod
 * schema. Every issue names the field by its path (`backends[1].service`) and says where it
 * is in the file with a `line L:C: ` prefix on the message, so the path stays a plain field
 * path that callers can match on, as in every other InvalidInputError.
 */

export type ConfigFormat = "yaml" | "json";

const FORMATS: Record<string, ConfigFormat> = { ".yaml": "yaml", ".yml": "yaml", ".json": "json" };

/** Reads, parses and validates a config file against `schema`; its name says its format unless `format` does. */
export async function loadConfigFile<S extends z.ZodType>(schema: S, path: string, format = formatOf(path)): Promise<z.output<S>> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new InvalidInputError(path, [{ path: "", message: `cannot read the file: ${code === undefined ? "" : `${code}: `}${readProblem(error)}` }]);
  }
  return parseConfigText(schema, text, format, path);
}

function formatOf(path: string): ConfigFormat {
  const format = FORMATS[extname(path).toLowerCase()];
  if (format === undefined) {
    throw new InvalidInputError(path, [{ path: "", message: "a config file must be named *.yaml, *.yml or *.json" }]);
  }
  return format;
}

/** The pure half of loading: text in, config or InvalidInputError (with lines) out. */
export function parseConfigText<S extends z.ZodType>(schema: S, text: string, format: ConfigFormat, source: string): z.output<S> {
  const lines = new LineCounter();
  const document = format === "json" ? parseJsonDocument(text, source, lines) : parseYamlDocument(text, source, lines);
  const input = toValue(document, source);
  const result = schema.safeParse(input);
  if (!result.success) throw new InvalidInputError(source, locatedIssues(result.error, input, document, lines));
  return result.data;
}

/** Deeper than any real config; yaml's parser recurses per level and a few thousand overflow the stack. */
const MAX_NESTING = 64;

/**
 * An upper bound of the nesting: open flow brackets outside quotes, plus the block indicators
 * (`- `, `? `) and indentation that start a line. Measured before parsing, without recursion:
 * `"- ".repeat(1000)` or `"[".repeat(1000)` would otherwise overflow the stack, and a second
 * such parse in the same process has crashed V8 itself.
 */
export function nestingDepth(text: string): number {
  let flow = 0;
  let deepest = 0;
  let quote: string | null = null;
  for (const line of text.split("\n")) {
    const prefix = /^[ \t?-]*/.exec(line)![0];
    const block = (prefix.match(/[?-]/g) ?? []).length + Math.floor(prefix.replace(/[?-]/g, "").length / 2);
    for (const char of line) {
      if (quote !== null) {
        if (char === quote) quote = null;
      } else if (char === '"' || char === "'") quote = char;
      else if (char === "[" || char === "{") deepest = Math.max(deepest, ++flow + block);
      else if (char === "]" || char === "}") flow = Math.max(0, flow - 1);
      else if (char === "#") break;
    }
    deepest = Math.max(deepest, block + flow);
  }
  return deepest;
}

function refuseDeepNesting(text: string, source: string): void {
  const depth = nestingDepth(text);
  if (depth > MAX_NESTING) throw new InvalidInputError(source, [{ path: "", message: `nested ${depth} levels deep, more than the ${MAX_NESTING} any config needs` }]);
}

function parseYamlDocument(text: string, source: string, lines: LineCounter): Document {
  refuseDeepNesting(text, source);
  // One document only: a second `---` would otherwise be silently ignored config.
  const document = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (document.errors.length > 0) {
    throw new InvalidInputError(
      source,
      document.errors.map((error) => ({ path: "", message: `${at(lines, error.pos[0])}not valid YAML: ${error.message}` })),
    );
  }
  return document;
}

/**
 * JSON.parse decides what is JSON (YAML would also take comments, trailing commas and single
 * quotes); the yaml parser, reading the same text, supplies positions and refuses duplicate
 * keys, which JSON.parse would silently resolve to the last one.
 */
function parseJsonDocument(text: string, source: string, lines: LineCounter): Document {
  refuseDeepNesting(text, source);
  const document = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true, schema: "json" });
  try {
    JSON.parse(text);
  } catch (error) {
    const message = (error as Error).message;
    const position = /at position (\d+)/.exec(message);
    const offset = position ? Number(position[1]) : (document.errors[0]?.pos[0] ?? 0);
    const reason = message.replace(/ in JSON at position \d+.*$/s, "");
    throw new InvalidInputError(source, [{ path: "", message: `${at(lines, offset)}not valid JSON: ${reason}` }]);
  }
  if (document.errors.length > 0) {
    throw new InvalidInputError(
      source,
      document.errors.map((error) => ({ path: "", message: `${at(lines, error.pos[0])}not valid JSON: ${error.message}` })),
    );
  }
  return document;
}

function toValue(document: Document, source: string): unknown {
  try {
    // The alias limit stops a "billion laughs" document from expanding without bound.
    return document.toJS({ maxAliasCount: 100 });
  } catch (error) {
    throw new InvalidInputError(source, [{ path: "", message: `cannot read the document: ${(error as Error).message}` }]);
  }
}

/** Issues in the order they appear in the file, which is the order a person fixes them in. */
function locatedIssues(error: z.ZodError, input: unknown, document: Document, lines: LineCounter): InputIssue[] {
  const plain = issuesOf(error, input);
  const located = error.issues.flatMap((issue, index): { offset: number; issue: InputIssue }[] => {
    const ours = plain[index] ?? { path: "", message: issue.message };
    if (issue.code === "unrecognized_keys") {
      // One issue per unknown key, each pointing at the key itself: that is what to delete.
      return issue.keys.map((key) => {
        const offset = offsetOf(document, [...issue.path, key], "key");
        return { offset, issue: { path: ours.path === "" ? key : `${ours.path}.${key}`, message: `${at(lines, offset)}unknown field` } };
      });
    }
    const offset = offsetOf(document, issue.path, issue.code === "invalid_key" ? "key" : "value");
    return [{ offset, issue: withoutSecret({ ...ours, message: `${at(lines, offset)}${ours.message}` }) }];
  });
  return located.sort((a, b) => a.offset - b.offset).map((entry) => entry.issue);
}

/**
 * A token is never echoed into an error message, which ends up in logs: neither as the value
 * of a `token` field, nor inside an object value that holds one (an issue about a whole block).
 */
function withoutSecret(issue: InputIssue): InputIssue {
  if (issue.value === undefined || (!issue.path.endsWith("token") && !holdsToken(issue.value))) return issue;
  return { path: issue.path, message: issue.message };
}

function holdsToken(value: unknown): boolean {
  if (typeof value !== "object" || value === null) return false;
  return Object.entries(value).some(([key, inner]) => /token/i.test(key) || holdsToken(inner));
}

/**
 * Where the field at `path` is in the file; a missing field is placed at the nearest thing
 * that is there (its parent), since that is where it has to be added.
 */
function offsetOf(document: Document, path: readonly PropertyKey[], want: "key" | "value"): number {
  let node: unknown = document.contents;
  let offset = rangeStart(node) ?? 0;
  for (const [depth, segment] of path.entries()) {
    const last = depth === path.length - 1;
    if (isMap(node)) {
      const pair = node.items.find((item) => isScalar(item.key) && String(item.key.value) === String(segment));
      if (pair === undefined) break;
      const keyStart = rangeStart(pair.key);
      const valueStart = rangeStart(pair.value);
      offset = (last && want === "key" ? keyStart : (valueStart ?? keyStart)) ?? offset;
      node = pair.value;
    } else if (isSeq(node) && typeof segment === "number") {
      node = node.items[segment];
      offset = rangeStart(node) ?? offset;
    } else {
      break;
    }
  }
  return offset;
}

function rangeStart(node: unknown): number | undefined {
  if (node === null || typeof node !== "object" || !("range" in node)) return undefined;
  const range = (node as { range?: unknown }).range;
  return Array.isArray(range) && typeof range[0] === "number" ? range[0] : undefined;
}

function at(lines: LineCounter, offset: number): string {
  const { line, col } = lines.linePos(offset);
  return `line ${line}:${col}: `;
}
