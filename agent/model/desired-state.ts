import { z } from "zod";
import { parseJsonWith, parseWith } from "./validate.js";
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
  .superRefine((backend, ctx) => refineUniqueServers(backend.servers, ctx));

/** One server per address:port in a backend; shared with the wire format's backend. */
export function refineUniqueServers(servers: readonly DesiredServer[], ctx: z.RefinementCtx): void {
  const seen = new Map<string, number>();
  servers.forEach((server, index) => {
    const key = endpointKey(server.address, server.port);
    const first = seen.get(key);
    if (first !== undefined) {
      ctx.addIssue({ code: "custom", path: ["servers", index], message: `duplicates servers[${first}] (${key})`, input: key });
    }
    seen.set(key, index);
  });
}
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
  return parseWith(desiredStateSchema, input, source);
}

/** Parses the JSON text of a desired-state file. */
export function parseDesiredStateJson(text: string, source: string): DesiredState {
  return parseJsonWith(desiredStateSchema, text, source);
}
