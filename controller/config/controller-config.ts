import { hostname } from "node:os";
import { z } from "zod";
import { nameSchema } from "../../agent/model/values.js";
import { LIMITS } from "../../proto/messages.js";
import { tlsFilesSchema } from "../../agent/tls/tls-files.js";
import { rolloutConfigSchema } from "../rollout/rollout-config.js";
import { transportProblem } from "../tls/transport-policy.js";
import { durationSchema, isDuration, LABEL_MESSAGE, labelKeySchema, labelValueSchema, listenSchema } from "./config-values.js";
import { DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_STALE_MS, DEFAULT_WAIT_MS, MAX_WAIT_MS } from "../discovery/consul/consul-client.js";
import { DEFAULT_MAX_CONNECTIONS } from "../discovery/consul/connection-budget.js";
import { consulFromEnvironment } from "../discovery/consul/consul-credentials.js";
import { DEFAULT_CONFIGURATION_RETRY_MS } from "../discovery/consul/consul-watch.js";

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

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isHttpUrl(text: string): boolean {
  if (!URL.canParse(text)) return false;
  const url = new URL(text);
  return (url.protocol === "http:" || url.protocol === "https:") && url.hostname !== "";
}

const fileSchema = z.string().min(1, "must not be empty");
// Consul's names for namespaces, partitions, peers and sameness groups: DNS-like labels.
const consulNameSchema = z.string().regex(/^[A-Za-z0-9-]{1,63}$/, "must be 1 to 63 letters, digits or '-'");

const consulFieldsSchema = z
  .strictObject({
    address: consulAddressSchema,
    // Sent as a header: a control character would split it, so only visible ASCII passes.
    token: z.string().regex(/^[\x21-\x7e]{1,256}$/, "must be 1 to 256 visible ASCII characters").optional(),
    /** A file whose first line is the token, re-read when it changes (a rotated token needs no restart). */
    tokenFile: fileSchema.optional(),
    datacenter: serviceNameSchema.optional(),
    /** Consul Enterprise: the namespace and admin partition every query is in (a mapping's own `ns`/`partition` win). */
    namespace: consulNameSchema.optional(),
    partition: consulNameSchema.optional(),
    healthy: z.enum(["passing", "passing-or-warning"]).default("passing"),
    weights: z.enum(["meta", "consul"]).default("meta"),
    /** For an https:// address: the CA that signed Consul's certificate; absent: the system's. */
    caFile: fileSchema.optional(),
    /** A client certificate and key, for clusters with `verify_incoming`. */
    certFile: fileSchema.optional(),
    keyFile: fileSchema.optional(),
    /** The name in Consul's certificate, when the address's host is not it (an IP, a load balancer). */
    tlsServerName: z.string().regex(/^[A-Za-z0-9.-]{1,253}$/, "must be a DNS name").optional(),
    /** How long Consul holds a blocking query; keep it below the idle timeout of any proxy in between. */
    wait: durationSchema.refine((ms) => ms <= MAX_WAIT_MS, "must be at most 10m (Consul's limit)").default(DEFAULT_WAIT_MS),
    /** Which server answers: `stale` any (scales reads, answers during an election), bounded by maxStaleMs. */
    consistency: z.enum(["default", "stale", "consistent"]).default("stale"),
    /** With `stale`: an answer from a server out of touch with the leader for longer is asked again of the leader. */
    maxStaleMs: durationSchema.default(DEFAULT_MAX_STALE_MS),
    /** The largest answer read; a service over it is reported by name, the others go on. */
    maxBodyBytes: z.number({ error: "must be a number" }).int("must be a whole number").min(1024, "must be at least 1024").default(DEFAULT_MAX_BODY_BYTES),
    /** Concurrent connections to Consul at most: keep it below Consul's limits.http_max_conns_per_client (200). */
    maxConnections: z.number({ error: "must be a number" }).int("must be a whole number").min(1, "must be at least 1").max(10_000, "must be at most 10000").default(DEFAULT_MAX_CONNECTIONS),
    /** After a start, how long pushes wait for every backend's first answer; then what answered goes out. */
    readyWaitMs: durationSchema.default(10_000),
    /** A configuration problem (403, unknown dc, an answer over maxBodyBytes) is retried this often. */
    configurationRetryMs: durationSchema.default(DEFAULT_CONFIGURATION_RETRY_MS),
  })
  .superRefine((consul, ctx) => {
    if (consul.token !== undefined && consul.tokenFile !== undefined) ctx.addIssue({ code: "custom", path: ["tokenFile"], message: "give token or tokenFile, not both", input: consul.tokenFile });
    if ((consul.certFile === undefined) !== (consul.keyFile === undefined)) {
      const path = consul.certFile === undefined ? "certFile" : "keyFile";
      ctx.addIssue({ code: "custom", path: [path === "certFile" ? "keyFile" : "certFile"], message: `needs ${path} too`, input: consul[path === "certFile" ? "keyFile" : "certFile"] });
    }
  });

/** What the block leaves out comes from Consul's environment variables, as with every Consul tool. */
const consulSchema = z.preprocess((input) => (isRecord(input) ? consulFromEnvironment(input, process.env) : input), consulFieldsSchema);
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

/**
 * A tagged address to use instead of the instance's address: `service:NAME` (Service.TaggedAddresses,
 * address and port) or `node:NAME` (Node.TaggedAddresses, with the service's port), e.g.
 * `service:lan_ipv6`, `node:wan_ipv4`; `service` and `node` take Service.Address (else Node.Address) and Node.Address.
 */
const addressChoiceSchema = z.string().regex(/^(service|node)(:[A-Za-z0-9_-]{1,64})?$/, "must be service, node, service:NAME or node:NAME (a tagged address)");

const backendMappingSchema = z.strictObject({
  backend: nameSchema,
  service: serviceNameSchema,
  tag: serviceNameSchema.optional(),
  /** More tags, all of which an instance must carry (with `tag`, if any). */
  tags: z.array(serviceNameSchema).max(16, "must list at most 16 tags").optional(),
  /** Consul: the datacenter (default: the agent's own, or discovery.consul.datacenter). */
  dc: serviceNameSchema.optional(),
  /** Consul Enterprise: the namespace and admin partition (default: discovery.consul's, else the token's). */
  ns: consulNameSchema.optional(),
  partition: consulNameSchema.optional(),
  /** Consul peering: the service as imported from this cluster peer, or from a sameness group. */
  peer: consulNameSchema.optional(),
  samenessGroup: consulNameSchema.optional(),
  /** Consul's filter expression on the answer (https://developer.hashicorp.com/consul/api-docs/features/filtering), passed through. */
  filter: z.string().min(1, "must not be empty").max(1024, "must be at most 1024 characters").optional(),
  address: addressChoiceSchema.optional(),
  /** Absent: every agent gets this backend. */
  agents: z
    .record(labelKeySchema, labelValueSchema, {
      error: (issue) => (issue.code === "invalid_key" ? `label name ${LABEL_MESSAGE}` : undefined),
    })
    .optional(),
  allowEmpty: z.boolean().default(false),
  /** Discovery changes of this backend go out in waves (see `rollout`), not at once. */
  staged: z.boolean().default(false),
}).refine((mapping) => mapping.peer === undefined || mapping.samenessGroup === undefined, { path: ["samenessGroup"], message: "cannot go with peer: a sameness group names its peers itself" });
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
  /**
   * Where replicas share their agents' status (`<prefix>/replicas/<replica>`, each under its
   * session) and the freeze (`<prefix>/freeze`), so that status, wait and freeze cover the
   * whole fleet; absent: the key itself.
   */
  fleetPrefix: z
    .string()
    .regex(/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/, "must be a Consul KV key: '/'-separated parts of letters, digits, '.', '_' or '-'")
    .max(200, "must be at most 200 characters")
    .optional(),
  /** This replica's name as the others tell it; absent: the host's name. */
  replica: z.string().regex(/^[A-Za-z0-9._-]{1,128}$/, "must be 1-128 letters, digits, '.', '_' or '-'").prefault(() => hostname()),
  /** Where operators reach this replica's API: a follower refusing a rollout action names it. */
  url: z.string().refine(isHttpUrl, "must be an http:// or https:// URL").optional(),
  /** Consul takes 10 s to 24 h; an unrenewed session (a dead leader) is released after it. */
  sessionTtlMs: durationSchema.refine((ms) => ms >= 10_000 && ms <= 86_400_000, "must be between 10s and 24h (Consul's range)").default(15_000),
  /** How long a released lock cannot be taken again (Consul's lock-delay): a late old leader's writes land first. */
  lockDelayMs: durationSchema.refine((ms) => ms <= 60_000, "must be at most 60s").default(15_000),
  /**
   * The node checks the session is bound to (Consul's `NodeChecks`). Default none, the TTL alone:
   * Consul's own default, `serfHealth` of whichever node took the request, would end the leadership
   * when an unrelated node behind a load-balanced address fails.
   */
  nodeChecks: z.array(z.string().min(1, "must not be empty")).max(16, "must list at most 16 checks").default([]),
});

export const DEFAULT_HTTP_LISTEN = "127.0.0.1:7901";

const httpSchema = z.strictObject({
  /** The status API, the page and /metrics; null: none. */
  listen: listenSchema.nullable().default(DEFAULT_HTTP_LISTEN),
  /** A file holding the token that mutating requests (freeze, rollout actions) must carry. */
  tokenFile: z.string().min(1, "must not be empty").optional(),
  /** A file holding a token that reads off loopback may carry instead (Prometheus, the page): it cannot act. */
  readTokenFile: z.string().min(1, "must not be empty").optional(),
  /** Reads on a loopback listen need no token; false where other local users must not see the fleet. */
  openLoopbackReads: z.boolean().default(true),
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
