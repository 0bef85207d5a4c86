import type { z } from "zod";
import { InvalidInputError, type InputIssue } from "../errors.js";

/** Validates input from outside; throws InvalidInputError naming every bad field and value. */
export function parseWith<S extends z.ZodType>(schema: S, input: unknown, source: string): z.output<S> {
  const result = schema.safeParse(input);
  if (!result.success) throw new InvalidInputError(source, issuesOf(result.error, input));
  return result.data;
}

/** The same for JSON text: text that is not JSON is an InvalidInputError too. */
export function parseJsonWith<S extends z.ZodType>(schema: S, text: string, source: string): z.output<S> {
  let input: unknown;
  try {
    input = JSON.parse(text);
  } catch (error) {
    throw new InvalidInputError(source, [{ path: "", message: `not valid JSON: ${(error as Error).message}` }]);
  }
  return parseWith(schema, input, source);
}

/** Turns zod's issues into ours, with the offending value looked up in the input. */
export function issuesOf(error: z.ZodError, input: unknown): InputIssue[] {
  return error.issues.map((issue) => {
    const path = formatPath(issue.path);
    const value = issue.code === "unrecognized_keys" ? undefined : valueAt(input, issue.path);
    const message = issue.code === "unrecognized_keys" ? `unknown field(s) ${issue.keys.join(", ")}` : issue.message;
    return value === undefined ? { path, message } : { path, message, value };
  });
}

function formatPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>((text, key) => {
    if (typeof key === "number") return `${text}[${key}]`;
    return text === "" ? String(key) : `${text}.${String(key)}`;
  }, "");
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let node: unknown = input;
  for (const key of path) {
    if (node === null || typeof node !== "object") return undefined;
    node = (node as Record<PropertyKey, unknown>)[key];
  }
  return node;
}
