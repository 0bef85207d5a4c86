import { z } from "zod";
import { desiredServerSchema, refineUniqueServers } from "../agent/model/desired-state.js";
import { parseWith } from "../agent/model/validate.js";
import { nameSchema } from "../agent/model/values.js";

/**
 * zod schemas of the messages of proto/hafleet.proto as proto-loader decodes them
 * (LOADER_OPTIONS). Protobuf fixes the types; these check the meaning and the sizes, on
 * receipt, on both sides. Unknown keys are stripped, not refused: proto-loader adds synthetic
 * ones (`_weight` for a proto3 `optional`), and protobuf has already dropped unknown fields.
 */

export const LIMITS = {
  labels: 64,
  sockets: 64,
  backends: 10_000,
  serversPerBackend: 10_000,
  text: 4_096,
  /** Inventory entries (backends over all sockets) in one hello: a host's HAProxy processes share most backends. */
  inventoryEntries: 20_000,
  /** A gRPC message either way: what an agent accepts, and the most a controller may be set to. */
  messageBytes: 64 * 1024 * 1024,
} as const;

const shortText = z.string().max(256);
const idSchema = z.string().regex(/^[A-Za-z0-9._-]{1,128}$/, "must be 1-128 letters, digits, '.', '_' or '-'");
/** Versions are content digests (controller/versions.ts); "" means none. */
export const versionSchema = z.string().regex(/^[A-Za-z0-9._:-]{0,128}$/, "must be at most 128 letters, digits, '.', '_', ':' or '-'");
const labelKey = z.string().regex(/^[A-Za-z0-9._/-]{1,63}$/, "label keys are 1-63 letters, digits, '.', '_', '/' or '-'");
const labelValue = z.string().regex(/^[A-Za-z0-9._-]{0,63}$/, "label values are up to 63 letters, digits, '.', '_' or '-'");

export const wireServerSchema = z.object(desiredServerSchema.shape);

export const wireBackendSchema = z
  .object({
    name: nameSchema,
    version: versionSchema,
    servers: z.array(wireServerSchema).max(LIMITS.serversPerBackend),
    allowEmpty: z.boolean(),
  })
  .superRefine((backend, ctx) => refineUniqueServers(backend.servers, ctx));
export type WireBackend = z.infer<typeof wireBackendSchema>;

export const helloSchema = z.object({
  agentId: idSchema,
  labels: z.record(labelKey, labelValue).refine((labels) => Object.keys(labels).length <= LIMITS.labels, `at most ${LIMITS.labels} labels`),
  hafleetVersion: shortText,
  sockets: z
    .array(
      z.object({
        socket: shortText,
        backends: z
          .array(z.object({ name: shortText, slots: z.number().int().min(0), serving: z.number().int().min(0), dynamic: z.boolean() }))
          .max(LIMITS.backends),
      }),
    )
    .max(LIMITS.sockets),
  appliedVersions: z.record(nameSchema, versionSchema),
});
export type Hello = z.infer<typeof helloSchema>;

export const backendResultSchema = z.object({
  backend: nameSchema,
  version: versionSchema,
  error: z.string().max(LIMITS.text),
  appliedVersion: versionSchema,
});
export type BackendResult = z.infer<typeof backendResultSchema>;

export const driftStateSchema = z.enum(["missing", "unexpected", "held"]);

/**
 * ADDR:PORT as HAProxy runs it: an IP (IPv6 bracketed), or the name or text HAProxy shows when
 * it runs no IP, and `-` for a port it does not show. Never a space or a control character: the
 * text reaches operators' terminals and pages.
 */
const driftEndpointSchema = z.string().regex(/^[A-Za-z0-9._:[\]-]{1,58}:([0-9]{1,5}|-)$/, "must be ADDR:PORT");

export const observedReportSchema = z.object({
  digest: versionSchema,
  backends: z
    .array(
      z.object({
        backend: nameSchema,
        socket: shortText,
        digest: versionSchema,
        serving: z.number().int().min(0),
        drift: z.array(z.object({ endpoint: driftEndpointSchema, state: driftStateSchema })).max(LIMITS.serversPerBackend),
        // Absent or "" (what proto-loader decodes when an agent sends none): not repairing.
        repairing: z.string().max(LIMITS.text).optional(),
      }),
    )
    .max(LIMITS.backends),
  appliedVersions: z.record(nameSchema, versionSchema).refine((versions) => Object.keys(versions).length <= LIMITS.backends, `at most ${LIMITS.backends} backends`),
});
export type ObservedReport = z.infer<typeof observedReportSchema>;

export const pushResponseSchema = z.object({
  nonce: shortText,
  results: z.array(backendResultSchema).max(LIMITS.backends),
  // proto-loader decodes an absent message field as null.
  observed: observedReportSchema.nullish(),
});
export type PushResponse = z.infer<typeof pushResponseSchema>;

export const heartbeatSchema = z.object({ sentAtMs: z.number().int().min(0) });

export const agentMessageSchema = z.discriminatedUnion("body", [
  z.object({ body: z.literal("hello"), hello: helloSchema }),
  z.object({ body: z.literal("response"), response: pushResponseSchema }),
  z.object({ body: z.literal("observed"), observed: observedReportSchema }),
  z.object({ body: z.literal("heartbeat"), heartbeat: heartbeatSchema }),
]);
export type AgentMessage = z.infer<typeof agentMessageSchema>;

export const desiredPushSchema = z.object({
  nonce: shortText,
  version: versionSchema,
  backends: z.array(wireBackendSchema).max(LIMITS.backends),
  removedBackends: z.array(nameSchema).max(LIMITS.backends),
});
export type DesiredPush = z.infer<typeof desiredPushSchema>;

export const controllerMessageSchema = z.discriminatedUnion("body", [
  z.object({ body: z.literal("push"), push: desiredPushSchema }),
  z.object({ body: z.literal("heartbeat"), heartbeat: heartbeatSchema }),
]);
export type ControllerMessage = z.infer<typeof controllerMessageSchema>;

/**
 * A hello's shape, counted before it is validated: validating 64 sockets of 9,999 backends cost
 * ~1.5 s of CPU and ~200 MB, repeatable by reconnecting. Null when the counts are within LIMITS.
 */
export function helloShapeProblem(raw: unknown): string | null {
  const sockets = (raw as { hello?: { sockets?: unknown } } | null)?.hello?.sockets;
  if (!Array.isArray(sockets)) return null;
  if (sockets.length > LIMITS.sockets) return `the hello lists ${sockets.length} sockets, over the limit of ${LIMITS.sockets}`;
  let entries = 0;
  for (const socket of sockets) {
    const backends = (socket as { backends?: unknown } | null)?.backends;
    if (Array.isArray(backends)) entries += backends.length;
  }
  return entries > LIMITS.inventoryEntries ? `the hello's inventory lists ${entries} backends over all sockets, over the limit of ${LIMITS.inventoryEntries}` : null;
}

/** Validates a decoded message; throws InvalidInputError naming every bad field. */
export function parseMessage<T>(schema: z.ZodType<T>, raw: unknown, source: string): T {
  return parseWith(schema, raw, source);
}
