import { hostname } from "node:os";
import { z } from "zod";
import { nameSchema } from "../../agent/model/values.js";
import { LIMITS } from "../../proto/messages.js";
import { tlsFilesSchema } from "../../agent/tls/tls-files.js";
import { rolloutConfigSchema } from "../rollout/rollout-config.js";
import { transportProblem } from "../tls/transport-policy.js";
import { durationSchema, isDuration, LABEL_MESSAGE, labelKeySchema, labelValueSchema, listenSchema } from "./config-values.js";

export { durationSchema, labelKeySchema, labelValueSchema, parseListen } from "./config-values.js";

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
  /** For an https:// address: the CA that signed Consul's certificate; absent: the system's. */
  caFile: z.string().min(1, "must not be empty").optional(),
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
  /** Discovery changes of this backend go out in waves (see `rollout`), not at once. */
  staged: z.boolean().default(false),
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
    /** A disconnected agent stays in the status (as disconnected) this long. */
    forgetAfterMs: durationSchema.default(86_400_000),
    /** Connected agents at most: one more is refused (RESOURCE_EXHAUSTED) and goes to another replica. */
    max: z.number({ error: "must be a number" }).int("must be a whole number").min(1, "must be at least 1").default(20_000),
    /** Each agent's connection is closed after this long (+-10%), so agents rebalance across replicas. */
    maxConnectionAgeMs: durationSchema.default(1_800_000),
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

function wholeNumber(min: number, max: number) {
  return z.number({ error: "must be a number" }).int("must be a whole number").min(min, `must be at least ${min}`).max(max, `must be at most ${max}`);
}

/** Each bound names its setting when hit, so an operator knows which one to raise. */
const limitsSchema = z.strictObject({
  /** The largest message an agent may send (its observed report grows with its backends). */
  maxMessageBytes: wholeNumber(65_536, LIMITS.messageBytes).default(16 * 1024 * 1024),
  /** An agent whose labels select more backends is refused when it connects. */
  backendsPerAgent: wholeNumber(1, LIMITS.backends).default(1_000),
  /** A discovery answer with more servers is held: the last good set stands. */
  serversPerBackend: wholeNumber(1, LIMITS.serversPerBackend).default(5_000),
  /** Pushes to one agent per second, after a burst of as many; later changes merge into the next. */
  pushesPerSecond: z.number({ error: "must be a number" }).positive("must be above 0").max(1_000, "must be at most 1000").default(10),
});

/**
 * Several replicas: one leads rollouts, by a Consul session lock on `key`, where it also
 * publishes the rollout for the others to serve (controller/leadership). Needs Consul discovery.
 */
const leadershipSchema = z.strictObject({
  key: z
    .string()
    .regex(/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/, "must be a Consul KV key: '/'-separated parts of letters, digits, '.', '_' or '-'")
    .max(256, "must be at most 256 characters")
    .default("hafleet/rollout"),
  /** This replica's name as the others tell it; absent: the host's name. */
  replica: z.string().regex(/^[A-Za-z0-9._-]{1,128}$/, "must be 1-128 letters, digits, '.', '_' or '-'").prefault(() => hostname()),
  /** Where operators reach this replica's API: a follower refusing a rollout action names it. */
  url: z.string().refine(isHttpUrl, "must be an http:// or https:// URL").optional(),
  /** Consul takes 10 s to 24 h; an unrenewed session (a dead leader) is released after it. */
  sessionTtlMs: durationSchema.refine((ms) => ms >= 10_000 && ms <= 86_400_000, "must be between 10s and 24h (Consul's range)").default(15_000),
  /** How long a released lock cannot be taken again (Consul's lock-delay): a late old leader's writes land first. */
  lockDelayMs: durationSchema.refine((ms) => ms <= 60_000, "must be at most 60s").default(15_000),
});

export const DEFAULT_HTTP_LISTEN = "127.0.0.1:7901";

const httpSchema = z.strictObject({
  /** The status API, the page and /metrics; null: none. */
  listen: listenSchema.nullable().default(DEFAULT_HTTP_LISTEN),
  /** A file holding the token that mutating requests (freeze, rollout actions) must carry. */
  tokenFile: z.string().min(1, "must not be empty").optional(),
});

const controllerFieldsSchema = z.strictObject({
  listen: listenSchema.default(DEFAULT_LISTEN),
  /** mTLS for the agents' gRPC streams: the fleet CA, the controller's certificate and key. */
  tls: tlsFilesSchema.optional(),
  /** Plaintext on a non-loopback listen address; absent means false (see transport-policy.ts). */
  insecure: z.boolean().optional(),
  http: httpSchema.prefault({}),
  /** Where the freeze and rollout state are kept across restarts; absent: in memory only. */
  stateDir: z.string().min(1, "must not be empty").optional(),
  discovery: discoverySchema,
  backends: backendsSchema,
  // prefault, not default: an absent block is parsed as `{}`, so its fields get their defaults.
  guards: guardsSchema.prefault({}),
  debounce: debounceSchema.prefault({}),
  agents: agentsSchema.prefault({}),
  limits: limitsSchema.prefault({}),
  rollout: rolloutConfigSchema.prefault({}),
  leadership: leadershipSchema.optional(),
});

export const controllerConfigSchema = controllerFieldsSchema.superRefine(
  (config, ctx) => {
    const problem = transportProblem(config);
    if (problem !== null) ctx.addIssue({ code: "custom", path: [problem.path], message: problem.message, input: problem.value });
    if (config.leadership !== undefined && !("consul" in config.discovery)) {
      ctx.addIssue({ code: "custom", path: ["leadership"], message: "needs discovery.consul: the lock is held in Consul", input: config.leadership });
    }
  },
  // Only once every field passed: the rule reads listen, tls and insecure as valid values.
  { when: (payload) => payload.issues.length === 0 },
);

export type ControllerConfig = z.output<typeof controllerConfigSchema>;
/** The configuration as written, before defaults and duration parsing. */
export type ControllerConfigInput = z.input<typeof controllerConfigSchema>;
