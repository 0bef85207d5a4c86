import { z } from "zod";
import { InvalidInputError, type InputIssue } from "../errors.js";
import { addressSchema, endpointKey, nameSchema, portSchema, weightSchema } from "./values.js";

export const desiredServerSchema = z.strictObject({
  address: addressSchema,
  port: portSchema,
  /** Absent: the backend's own default weight (the slot's configured weight). */
  weight: weightSchema.optional(),
});
export type DesiredServer = z.infer<typeof desiredServerSchema>;

export const desiredBackendSchema = z
  .strictObject({
    name: nameSchema,
    servers: z.array(desiredServerSchema),
  })
  .superRefine((backend, ctx) => {
    const seen = new Map<string, number>();
    backend.servers.forEach((server, index) => {
      const key = endpointKey(server.address, server.port);
      const first = seen.get(key);
      if (first !== undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["servers", index],
          message: `duplicates servers[${first}] (${key})`,
          input: key,
        });
      }
      seen.set(key, index);
    });
  });
export type DesiredBackend = z.infer<typeof desiredBackendSchema>;

export const desiredStateSchema = z
  .strictObject({
    version: z.string().max(128, "must be at most 128 characters").optional(),
    backends: z.array(desiredBackendSchema),
  })
  .superRefine((state, ctx) => {
    const seen = new Set<string>();
    state.backends.forEach((backend, index) => {
      if (seen.has(backend.name)) {
        ctx.addIssue({
          code: "custom",
          path: ["backends", index, "name"],
          message: "backend listed twice",
          input: backend.name,
        });
      }
      seen.add(backend.name);
    });
  });
export type DesiredState = z.infer<typeof desiredStateSchema>;

/**
 * Validates parsed JSON; throws InvalidInputError naming every bad field and value.
 * Duplicates are looked for once every value has the right type (zod runs refinements only
 * on well-typed data), so a file with both shows its duplicates on the next try.
 */
export function parseDesiredState(input: unknown, source: string): DesiredState {
  const result = desiredStateSchema.safeParse(input);
  if (!result.success) throw new InvalidInputError(source, issuesOf(result.error, input));
  return result.data;
}

/** Parses the JSON text of a desired-state file. */
export function parseDesiredStateJson(text: string, source: string): DesiredState {
  let input: unknown;
  try {
    input = JSON.parse(text);
  } catch (error) {
    throw new InvalidInputError(source, [{ path: "", message: `not valid JSON: ${(error as Error).message}` }]);
  }
  return parseDesiredState(input, source);
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
