import { readFile } from "node:fs/promises";
import { dirname, extname, isAbsolute, resolve } from "node:path";
import type { ParseArgsConfig } from "node:util";
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document } from "yaml";
import type { z } from "zod";
import { InvalidInputError, type InputIssue } from "../../agent/errors.js";
import { issuesOf } from "../../agent/model/validate.js";
import { controllerConfigSchema, type ControllerConfig, type ControllerConfigInput } from "./controller-config.js";

/*
 * Every issue from a file names the field by its path (`backends[1].service`) and says where
 * it is in the file with a `line L:C: ` prefix on the message, so the path stays a plain
 * field path that callers can match on, as in every other InvalidInputError.
 */

export type ConfigFormat = "yaml" | "json";

const FORMATS: Record<string, ConfigFormat> = { ".yaml": "yaml", ".yml": "yaml", ".json": "json" };

/** Reads, parses and validates a controller config file; `discovery.file` is made absolute. */
export async function loadControllerConfig(path: string): Promise<ControllerConfig> {
  const format = FORMATS[extname(path).toLowerCase()];
  if (format === undefined) {
    throw new InvalidInputError(path, [{ path: "", message: "a config file must be named *.yaml, *.yml or *.json" }]);
  }
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new InvalidInputError(path, [{ path: "", message: `cannot read the file: ${(error as Error).message}` }]);
  }
  const config = parseControllerConfigText(text, format, path);
  // A catalog path in a config file means "next to this file", wherever the controller started.
  if ("file" in config.discovery && !isAbsolute(config.discovery.file)) {
    return { ...config, discovery: { file: resolve(dirname(path), config.discovery.file) } };
  }
  return config;
}

/** The pure half of loading: text in, config or InvalidInputError (with lines) out. */
export function parseControllerConfigText(text: string, format: ConfigFormat, source: string): ControllerConfig {
  const lines = new LineCounter();
  const document = format === "json" ? parseJsonDocument(text, source, lines) : parseYamlDocument(text, source, lines);
  const input = toValue(document, source);
  const result = controllerConfigSchema.safeParse(input);
  if (!result.success) throw new InvalidInputError(source, locatedIssues(result.error, input, document, lines));
  return result.data;
}

function parseYamlDocument(text: string, source: string, lines: LineCounter): Document {
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
    if (issue.code === "unrecognized_keys") {
      // One issue per unknown key, each pointing at the key itself: that is what to delete.
      return issue.keys.map((key) => {
        const path = [...issue.path, key];
        const offset = offsetOf(document, path, "key");
        return { offset, issue: { path: formatPath(path), message: `${at(lines, offset)}unknown field` } };
      });
    }
    const ours = plain[index] ?? { path: formatPath(issue.path), message: issue.message };
    const offset = offsetOf(document, issue.path, issue.code === "invalid_key" ? "key" : "value");
    return [{ offset, issue: withoutSecret({ ...ours, message: `${at(lines, offset)}${ours.message}` }) }];
  });
  return located.sort((a, b) => a.offset - b.offset).map((entry) => entry.issue);
}

/** A token is never echoed into an error message, which ends up in logs. */
function withoutSecret(issue: InputIssue): InputIssue {
  if (!issue.path.endsWith("token") || issue.value === undefined) return issue;
  return { path: issue.path, message: issue.message };
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

function formatPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>((text, key) => {
    if (typeof key === "number") return `${text}[${key}]`;
    return text === "" ? String(key) : `${text}.${String(key)}`;
  }, "");
}

/* ---------------------------------------------------------------- quick-start flags */

type FlagOptions = NonNullable<ParseArgsConfig["options"]>;

/** The quick-start flags, for `parseFlags`, so the CLI and `configFromFlags` cannot drift apart. */
export const quickStartFlagOptions = {
  listen: { type: "string" },
  consul: { type: "string" },
  "catalog-file": { type: "string" },
  "consul-token": { type: "string" },
  "consul-dc": { type: "string" },
  map: { type: "string", multiple: true },
} as const satisfies FlagOptions;

export interface QuickStartFlags {
  listen?: string;
  consul?: string;
  "catalog-file"?: string;
  "consul-token"?: string;
  "consul-dc"?: string;
  map?: string[];
}

const MAP_USAGE = "must be SERVICE=BACKEND or SERVICE#TAG=BACKEND";

/**
 * The same config as a file would give, from flags: one backend per `--map`, every agent
 * gets every backend, all other settings at their defaults. Issues name the flag.
 */
export function configFromFlags(flags: QuickStartFlags, source = "command line"): ControllerConfig {
  const issues: InputIssue[] = [];
  const consul = flags.consul;
  const file = flags["catalog-file"];
  if ((consul === undefined) === (file === undefined)) {
    issues.push({ path: "--consul", message: "give exactly one of --consul URL, --catalog-file FILE" });
  }
  for (const flag of ["consul-token", "consul-dc"] as const) {
    if (flags[flag] !== undefined && consul === undefined) issues.push({ path: `--${flag}`, message: "only goes with --consul" });
  }
  const maps = flags.map ?? [];
  if (maps.length === 0) issues.push({ path: "--map", message: `give at least one --map; each ${MAP_USAGE}` });
  const backends = maps.map((text) => {
    const mapping = parseMapFlag(text);
    if (mapping === null) issues.push({ path: "--map", message: MAP_USAGE, value: text });
    return mapping;
  });
  if (issues.length > 0) throw new InvalidInputError(source, issues);

  const input: ControllerConfigInput = {
    ...(flags.listen === undefined ? {} : { listen: flags.listen }),
    discovery:
      consul === undefined
        ? { file: file ?? "" }
        : {
            consul: {
              address: consul,
              ...(flags["consul-token"] === undefined ? {} : { token: flags["consul-token"] }),
              ...(flags["consul-dc"] === undefined ? {} : { datacenter: flags["consul-dc"] }),
            },
          },
    backends: backends.filter((mapping) => mapping !== null),
  };
  const result = controllerConfigSchema.safeParse(input);
  if (!result.success) throw new InvalidInputError(source, result.error.issues.map((issue) => flagIssue(issue, flags)));
  return result.data;
}

function parseMapFlag(text: string): { service: string; tag?: string; backend: string } | null {
  const equals = text.indexOf("=");
  if (equals < 0) return null;
  const left = text.slice(0, equals);
  const backend = text.slice(equals + 1);
  const hash = left.indexOf("#");
  if (hash < 0) return { service: left, backend };
  return { service: left.slice(0, hash), tag: left.slice(hash + 1), backend };
}

const FLAG_OF_PATH: Record<string, keyof QuickStartFlags> = {
  listen: "listen",
  "discovery.consul.address": "consul",
  "discovery.consul.token": "consul-token",
  "discovery.consul.datacenter": "consul-dc",
  "discovery.file": "catalog-file",
};

const MAP_PART: Record<string, string> = { service: "SERVICE", tag: "TAG", backend: "BACKEND" };

function flagIssue(issue: z.ZodError["issues"][number], flags: QuickStartFlags): InputIssue {
  const [first, index, field] = issue.path;
  if (first === "backends" && typeof index === "number") {
    const part = typeof field === "string" ? (MAP_PART[field] ?? field) : undefined;
    const message = part === undefined ? issue.message : `${part} ${issue.message}`;
    const value = flags.map?.[index];
    return value === undefined ? { path: "--map", message } : { path: "--map", message, value };
  }
  const flag = FLAG_OF_PATH[formatPath(issue.path)];
  if (flag === undefined) return { path: formatPath(issue.path), message: issue.message };
  const value = flag === "consul-token" ? undefined : flags[flag];
  return value === undefined ? { path: `--${flag}`, message: issue.message } : { path: `--${flag}`, message: issue.message, value };
}
