import { isIP } from "node:net";
import { z } from "zod";
import { parseDuration } from "../../agent/cli/args.js";
import { InvalidInputError } from "../../agent/errors.js";
import { nameSchema } from "../../agent/model/values.js";

/*
 * The controller's configuration, as one zod schema: the file loader and the quick-start
 * flags both end here, so a setting means the same thing whichever way it was given.
 */

export const DEFAULT_LISTEN = "127.0.0.1:7900";

// Consul allows more in a service name, but these names go into URLs and logs verbatim:
// only characters that need no escaping anywhere pass.
const SERVICE_PATTERN = /^[A-Za-z0-9._-]{1,128}$/;
const SERVICE_MESSAGE = "must be 1 to 128 letters, digits, '.', '_' or '-'";

export const serviceNameSchema = z.string().regex(SERVICE_PATTERN, SERVICE_MESSAGE);

const LABEL_PATTERN = /^[A-Za-z0-9._-]{1,63}$/;
const LABEL_MESSAGE = "must be 1 to 63 letters, digits, '.', '_' or '-'";

/** An agent label's name and value: the same rules as the labels an agent announces. */
export const labelKeySchema = z.string().regex(LABEL_PATTERN, LABEL_MESSAGE);
export const labelValueSchema = z.string({ error: "must be a string" }).regex(LABEL_PATTERN, LABEL_MESSAGE);

// A longer delay overflows node's timers, which then fire at once instead of never.
const TIMER_MAX_MS = 2_147_483_647;
const DURATION_MESSAGE = "must be a duration: milliseconds, or a string like 500ms, 5s or 2m";

/** Milliseconds as a number, or the `--timeout`-style text `500ms`, `5s`, `2m`. */
export const durationSchema = z
  .union([z.number(), z.string()], { error: DURATION_MESSAGE })
  .transform((value, ctx) => {
    if (typeof value === "number") return value;
    try {
      return parseDuration("duration", value);
    } catch {
      ctx.addIssue({ code: "custom", message: DURATION_MESSAGE, input: value });
      return z.NEVER;
    }
  })
  .pipe(
    z
      .number()
      .int("must be a whole number of milliseconds")
      .min(1, "must be at least 1 ms")
      .max(TIMER_MAX_MS, `must be at most ${TIMER_MAX_MS} ms`),
  );

function isDuration(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 1 && value <= TIMER_MAX_MS;
}

const LISTEN_PATTERN = /^(?:\[(?<v6>[0-9A-Fa-f:.]+)\]|(?<host>[A-Za-z0-9.-]+)):(?<port>[0-9]{1,5})$/;
const LISTEN_MESSAGE = "must be HOST:PORT (IPv6 as [::1]:PORT) with a port in 0..65535";

function listenParts(text: string): { host: string; port: number } | null {
  const match = LISTEN_PATTERN.exec(text);
  const groups = match?.groups;
  if (groups === undefined) return null;
  const port = Number(groups.port);
  if (port > 65535) return null;
  if (groups.v6 !== undefined) return isIP(groups.v6) === 6 ? { host: groups.v6, port } : null;
  return groups.host === undefined ? null : { host: groups.host, port };
}

/**
 * `HOST:PORT` or `[v6]:PORT`; the host comes back without brackets, ready for `listen()`.
 * Port 0 passes: an ephemeral port is what tests and side-by-side runs want.
 */
export function parseListen(text: string): { host: string; port: number } {
  const parts = listenParts(text);
  if (parts === null) throw new InvalidInputError("listen", [{ path: "listen", message: LISTEN_MESSAGE, value: text }]);
  return parts;
}

const listenSchema = z.string().refine((text) => listenParts(text) !== null, LISTEN_MESSAGE);

const consulAddressSchema = z.string().refine(isHttpUrl, "must be an http:// or https:// URL");

function isHttpUrl(text: string): boolean {
  if (!URL.canParse(text)) return false;
  const url = new URL(text);
  return (url.protocol === "http:" || url.protocol === "https:") && url.hostname !== "";
}

const consulSchema = z.strictObject({
  address: consulAddressSchema,
  // Sent as a header: a control character would split it, so only visible ASCII passes.
  token: z.string().regex(/^[\x21-\x7e]{1,256}$/, "must be 1 to 256 visible ASCII characters").optional(),
  datacenter: serviceNameSchema.optional(),
  healthy: z.enum(["passing", "passing-or-warning"]).default("passing"),
  weights: z.enum(["meta", "consul"]).default("meta"),
});
export type ConsulDiscovery = z.output<typeof consulSchema>;

export type Discovery = { consul: ConsulDiscovery } | { file: string };

// Both alternatives in one strict object, rather than a zod union: a union's failure reports
// "invalid input" for the whole block, where this names the field that is wrong.
const discoverySchema = z
  .strictObject({
    consul: consulSchema.optional(),
    file: z.string().min(1, "must not be empty").optional(),
  })
  .transform((discovery, ctx): Discovery => {
    if (discovery.consul !== undefined && discovery.file === undefined) return { consul: discovery.consul };
    if (discovery.file !== undefined && discovery.consul === undefined) return { file: discovery.file };
    ctx.addIssue({ code: "custom", message: "must have exactly one of consul, file", input: discovery });
    return z.NEVER;
  });

const backendMappingSchema = z.strictObject({
  backend: nameSchema,
  service: serviceNameSchema,
  tag: serviceNameSchema.optional(),
  /** Absent: every agent gets this backend. */
  agents: z
    .record(labelKeySchema, labelValueSchema, {
      error: (issue) => (issue.code === "invalid_key" ? `label name ${LABEL_MESSAGE}` : undefined),
    })
    .optional(),
  allowEmpty: z.boolean().default(false),
});
export type BackendMapping = z.output<typeof backendMappingSchema>;

const backendsSchema = z
  .array(backendMappingSchema)
  .min(1, "must map at least one backend")
  .superRefine(
    (backends, ctx) => {
      // Run even when some entries failed, so that every problem shows in one pass: entries are
      // therefore checked for type before use.
      const first = new Map<string, number>();
      backends.forEach((mapping: unknown, index) => {
        const name = mapping !== null && typeof mapping === "object" ? (mapping as { backend?: unknown }).backend : undefined;
        if (typeof name !== "string") return;
        const earlier = first.get(name);
        if (earlier === undefined) {
          first.set(name, index);
          return;
        }
        ctx.addIssue({
          code: "custom",
          path: [index, "backend"],
          message: `backend mapped twice (first at backends[${earlier}])`,
          input: name,
        });
      });
    },
    { when: (payload) => Array.isArray(payload.value) },
  );

const guardsSchema = z.strictObject({
  maxDropShare: z
    .number({ error: "must be a number" })
    .min(0, "must be between 0 and 1")
    .max(1, "must be between 0 and 1")
    .default(0.5),
  /** While a service is held, how often discovery is read again, blocking query or not. */
  recheckMs: durationSchema.default(5000),
});

const debounceSchema = z
  .strictObject({
    quietMs: durationSchema.default(100),
    maxMs: durationSchema.default(1000),
  })
  .superRefine((debounce, ctx) => {
    // Refinements run even when a field failed: compare only values that passed.
    if (isDuration(debounce.quietMs) && isDuration(debounce.maxMs) && debounce.quietMs > debounce.maxMs) {
      ctx.addIssue({ code: "custom", path: ["quietMs"], message: `must not exceed maxMs (${debounce.maxMs} ms)`, input: debounce.quietMs });
    }
  });

const agentsSchema = z
  .strictObject({
    heartbeatMs: durationSchema.default(5000),
    deadAfterMs: durationSchema.default(15000),
  })
  .superRefine((agents, ctx) => {
    if (isDuration(agents.heartbeatMs) && isDuration(agents.deadAfterMs) && agents.deadAfterMs <= agents.heartbeatMs) {
      ctx.addIssue({
        code: "custom",
        path: ["deadAfterMs"],
        message: `must be longer than heartbeatMs (${agents.heartbeatMs} ms), or every agent is dead between heartbeats`,
        input: agents.deadAfterMs,
      });
    }
  });

export const controllerConfigSchema = z.strictObject({
  listen: listenSchema.default(DEFAULT_LISTEN),
  discovery: discoverySchema,
  backends: backendsSchema,
  // prefault, not default: an absent block is parsed as `{}`, so its fields get their defaults.
  guards: guardsSchema.prefault({}),
  debounce: debounceSchema.prefault({}),
  agents: agentsSchema.prefault({}),
});

export type ControllerConfig = z.output<typeof controllerConfigSchema>;
/** The configuration as written, before defaults and duration parsing. */
export type ControllerConfigInput = z.input<typeof controllerConfigSchema>;
