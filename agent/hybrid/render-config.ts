import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import { dirname, resolve } from "node:path";
import nunjucks from "nunjucks";
import { z } from "zod";
import { InvalidInputError, type InputIssue } from "../errors.js";
import { parseWith } from "../model/validate.js";
import { formatEndpoint, RENDERABLE_BALANCE, type RenderContext } from "./render-model.js";

/**
 * haproxy.cfg from the operator's nunjucks template. Values go into config lines unescaped
 * (`autoescape: false`: HTML escaping would only corrupt them), so every value is checked
 * against what a config line can hold before rendering instead.
 */

/** `--var key=value` values: variables a template reads next to `backends`. */
export type TemplateVars = Readonly<Record<string, string>>;

const VAR_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
// A line break would start a new config line and `#` a comment; other control bytes are typos.
const VAR_VALUE = /^[^\u0000-\u001f\u007f#]*$/;
const RESERVED_KEYS = new Set(["backends"]);

const templateVarsSchema = z.record(
  z.string(),
  z.string().max(4096, "must be at most 4096 characters").regex(VAR_VALUE, "must not hold a line break, a control character or '#'"),
);

/** `key=value` texts (from `--var`) into validated variables; a key given twice is refused. */
export function parseTemplateVars(texts: readonly string[], source = "--var"): TemplateVars {
  const vars = new Map<string, string>();
  const issues: InputIssue[] = [];
  for (const text of texts) {
    const at = text.indexOf("=");
    if (at <= 0) {
      issues.push({ path: "var", message: "must be KEY=VALUE", value: text });
      continue;
    }
    const key = text.slice(0, at);
    // Keys are checked here: zod reports a bad record key only as "Invalid key in record".
    if (!VAR_KEY.test(key)) issues.push({ path: `var.${key}`, message: "a variable name is letters, digits and '_', not starting with a digit", value: text });
    else if (RESERVED_KEYS.has(key)) issues.push({ path: `var.${key}`, message: "is reserved for the rendered backends", value: text });
    // `__proto__` and the like would reach an object's prototype rather than be a variable.
    else if (key.startsWith("__")) issues.push({ path: `var.${key}`, message: "names starting with '__' are reserved", value: text });
    else if (vars.has(key)) issues.push({ path: `var.${key}`, message: "given twice", value: text });
    vars.set(key, text.slice(at + 1));
  }
  if (issues.length > 0) throw new InvalidInputError(source, issues);
  return parseWith(templateVarsSchema, Object.fromEntries(vars), source);
}

export interface ConfigTemplate {
  /** Absolute path: error messages name it, and `include` resolves next to it. */
  readonly path: string;
  /** The rendered file; ends with a newline (HAProxy alerts on a last line without one). */
  render(context: RenderContext, vars?: TemplateVars): string;
}

/** Reads and compiles the template: a syntax error is reported now, naming file and line. */
export async function loadTemplate(path: string): Promise<ConfigTemplate> {
  const absolute = resolve(path);
  let source: string;
  try {
    source = await readFile(absolute, "utf8");
  } catch (error) {
    throw new InvalidInputError(path, [{ path: "", message: `cannot read the template: ${(error as Error).message}` }]);
  }
  return compileTemplate(source, absolute);
}

/** Compiles template text as if read from `path` (which names it in errors and roots includes). */
export function compileTemplate(source: string, path: string): ConfigTemplate {
  const absolute = resolve(path);
  // Includes resolve in the template's own folder only (the loader refuses `../` and absolute
  // paths outside it); noCache, so an edited include is picked up by the next render.
  const loader = new nunjucks.FileSystemLoader(dirname(absolute), { noCache: true });
  // trimBlocks/lstripBlocks: a `{% for %}` line leaves no blank line or indentation behind.
  const env = new nunjucks.Environment(loader, { autoescape: false, throwOnUndefined: true, trimBlocks: true, lstripBlocks: true });
  let template: nunjucks.Template;
  try {
    template = new nunjucks.Template(source, env, absolute, true);
  } catch (error) {
    throw templateError(error, absolute, source);
  }
  return {
    path: absolute,
    render(context, vars = {}) {
      checkContext(context);
      let text: string;
      try {
        // The variables first: the rendered backends always win over a variable of that name.
        text = template.render({ ...vars, backends: context.backends });
      } catch (error) {
        throw templateError(error, absolute, source);
      }
      return text.endsWith("\n") ? text : `${text}\n`;
    },
  };
}

export interface TemplateErrorLocation {
  file: string;
  line: number | null;
  column: number | null;
  detail: string;
}

const HEADER = /\(([^\n]*?)\)(?: \[Line (\d+)(?:, Column (\d+))?\])?\n {1,2}/g;
const NESTED_PREFIX = /^Template render error: /;
// Errors nunjucks wraps from a JS exception (`Error: Unable to call...`) carry its 0-based
// line and column; its own (parse errors, `attempted to output null or undefined value`)
// are 1-based.
const WRAPPED_EXCEPTION = /^[A-Za-z]*Error: /;

/**
 * Where a nunjucks error happened. Its message is `(file) [Line L, Column C]\n  detail`,
 * one header per include level; the innermost header that has a line is the place.
 */
export function locateTemplateError(message: string, fallbackFile: string): TemplateErrorLocation {
  const headers = [...message.matchAll(HEADER)];
  if (headers.length === 0) return { file: fallbackFile, line: null, column: null, detail: message.trim() };
  const last = headers[headers.length - 1]!;
  const detail = message.slice(last.index + last[0].length).replace(NESTED_PREFIX, "").trim();
  const placed = [...headers].reverse().find((header) => header[2] !== undefined) ?? last;
  const offset = WRAPPED_EXCEPTION.test(detail) ? 1 : 0;
  const line = placed[2] === undefined ? null : Number(placed[2]) + offset;
  const column = placed[3] === undefined ? null : Number(placed[3]) + offset;
  const file = placed[1] === "unknown path" || placed[1] === undefined ? fallbackFile : placed[1];
  return { file, line, column, detail };
}

function templateError(error: unknown, path: string, source: string): InvalidInputError {
  const message = error instanceof Error ? error.message : String(error);
  const { file, line, column, detail } = locateTemplateError(message, path);
  if (line === null) return new InvalidInputError(file, [{ path: "", message: detail }]);
  const where = column === null ? `line ${line}` : `line ${line}, column ${column}`;
  // nunjucks does not name the undefined variable: the line itself shows which one it is.
  const text = lineOf(file === path ? source : readQuietly(file), line);
  const issue: InputIssue = text === null ? { path: where, message: detail } : { path: where, message: `${detail} in: ${text.trim()}` };
  return new InvalidInputError(file, [issue]);
}

function lineOf(source: string | null, line: number): string | null {
  return source?.split("\n")[line - 1] ?? null;
}

function readQuietly(file: string): string | null {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return null;
  }
}

const CONFIG_NAME = /^[A-Za-z0-9._:-]+$/;

/**
 * Defence in depth: the builders only produce checked values, but a context may be built by
 * hand, and a newline or `#` in one value would rewrite the file around it.
 */
export function checkContext(context: RenderContext): void {
  const issues: InputIssue[] = [];
  const bad = (path: string, message: string, value: unknown) => issues.push({ path, message, value });
  const names = new Set<string>();
  context.backends.forEach((backend, b) => {
    const at = `backends[${b}]`;
    if (typeof backend.name !== "string" || !CONFIG_NAME.test(backend.name)) bad(`${at}.name`, "is not a config-safe name", backend.name);
    else if (names.has(backend.name)) bad(`${at}.name`, "backend listed twice", backend.name);
    names.add(backend.name);
    if (backend.balance !== "" && !(RENDERABLE_BALANCE as readonly string[]).includes(backend.balance)) bad(`${at}.balance`, "is not a known algorithm", backend.balance);
    const servers = new Set<string>();
    backend.servers.forEach((server, s) => {
      const where = `${at}.servers[${s}]`;
      if (typeof server.name !== "string" || !CONFIG_NAME.test(server.name)) bad(`${where}.name`, "is not a config-safe name", server.name);
      else if (servers.has(server.name)) bad(`${where}.name`, "server listed twice", server.name);
      servers.add(server.name);
      const addressOk = typeof server.address === "string" && isIP(server.address) !== 0 && /^[0-9A-Fa-f:.]+$/.test(server.address);
      const portOk = Number.isInteger(server.port) && server.port >= 1 && server.port <= 65535;
      if (!addressOk) bad(`${where}.address`, "is not an IP literal", server.address);
      if (!portOk) bad(`${where}.port`, "is not a port in 1..65535", server.port);
      const endpoint = formatEndpoint(server.address, server.port);
      if (addressOk && portOk && server.endpoint !== endpoint) bad(`${where}.endpoint`, `is not ${endpoint}`, server.endpoint);
      if (!Number.isInteger(server.weight) || server.weight < 0 || server.weight > 256) bad(`${where}.weight`, "is not an integer in 0..256", server.weight);
      if (typeof server.disabled !== "boolean") bad(`${where}.disabled`, "is not a boolean", server.disabled);
    });
  });
  if (issues.length > 0) throw new InvalidInputError("render context", issues);
}
