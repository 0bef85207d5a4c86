import { hostname } from "node:os";
import { z } from "zod";
import { InvalidInputError } from "../errors.js";
import { parseTemplateVars } from "../hybrid/render-config.js";
import { MAX_SPARE_SLOTS } from "../hybrid/render-model.js";
import { manageListSchema } from "../model/manage-patterns.js";
import { parseSocketAddress } from "../runtime/socket-address.js";
import { helloSchema, LIMITS } from "../../proto/messages.js";
import { durationSchema } from "./duration.js";
import { isLoopbackHost } from "../metrics/http-endpoint.js";
import { tlsFilesSchema } from "../tls/tls-files.js";
import { listenSchema, parseListen } from "../../controller/config/config-values.js";

/*
 * `hafleet-agent run`'s settings, as one zod schema: the config file and the run flags both
 * end here, so a setting means the same thing whichever way it was given. The identity rules
 * are the hello's own, so an id or label that passes here is one the controller takes.
 */

const DEFAULT_STATE_DIR = "/var/lib/hafleet";

/** Not a HOST:PORT at all counts as loopback here: the listen schema says what is wrong with it. */
function isLoopbackListen(text: string): boolean {
  try {
    return isLoopbackHost(parseListen(text).host);
  } catch {
    return true;
  }
}

/**
 * A check made by one of our parsers (which throw InvalidInputError), as zod issues; `pathOf`
 * places a parser's issue below the field, for parsers that check several values at once.
 */
function checkedBy<T>(parse: (value: T) => unknown, pathOf: (issuePath: string) => PropertyKey[] = () => []) {
  return (value: T, ctx: z.RefinementCtx) => {
    try {
      parse(value);
    } catch (error) {
      if (!(error instanceof InvalidInputError)) throw error;
      for (const issue of error.issues) ctx.addIssue({ code: "custom", path: pathOf(issue.path), message: issue.message, input: issue.value ?? value });
    }
  };
}

const CONTROLLER_ADDRESS = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/;

function isControllerAddress(text: string): boolean {
  const port = Number(CONTROLLER_ADDRESS.exec(text)?.[1]);
  return port >= 1 && port <= 65535;
}

const controllerSchema = z.string().refine(isControllerAddress, "must be HOST:PORT or [IPv6]:PORT with a port in 1..65535");
const socketSchema = z.string().superRefine(checkedBy(parseSocketAddress));
const pathSchema = z.string().min(1, "must not be empty");

const varsSchema = z
  .record(z.string(), z.string({ error: "must be a string" }))
  // The same rules as `--var`: names a template can use, values a config line can hold. Its
  // issues name a variable as `var.KEY` (a name) or `KEY` (a value).
  .superRefine(checkedBy((vars: Record<string, string>) => parseTemplateVars(varTexts(vars)), (path) => (path === "var" ? [] : [path.replace(/^var\./, "")])));

/** Variables as the `--var KEY=VALUE` texts that hybrid mode takes. */
export function varTexts(vars: Readonly<Record<string, string>>): string[] {
  return Object.entries(vars).map(([key, value]) => `${key}=${value}`);
}

/** The hybrid-mode flags, by the same names, as a block. */
const hybridSchema = z.strictObject({
  configTemplate: pathSchema,
  configOut: pathSchema,
  stateFile: pathSchema,
  masterSocket: socketSchema,
  spareSlots: z.number().int("must be a whole number").min(0, `must be in 0..${MAX_SPARE_SLOTS}`).max(MAX_SPARE_SLOTS, `must be in 0..${MAX_SPARE_SLOTS}`).default(4),
  vars: varsSchema.default({}),
});

/** Said of a controller off loopback without tls or insecure; the flags' wording names the flags. */
export const REMOTE_NEEDS_TLS = "needs tls (ca, cert, key) or insecure: true, since it is not a loopback address: anyone in the path could push any desired state";
export const REMOTE_NEEDS_TLS_FLAGS =
  "needs --tls-ca, --tls-cert and --tls-key, or --insecure, since it is not a loopback address: anyone in the path could push any desired state";

export const agentConfigSchema = z
  .strictObject({
    /** Tried in order, the next one after each failure. */
    controllers: z.array(controllerSchema).min(1, "must list at least one controller"),
    sockets: z.array(socketSchema).min(1, "must list at least one admin socket").max(LIMITS.sockets, `at most ${LIMITS.sockets} sockets`),
    /** Absent: this host's name, so one file serves every host of a group. */
    id: helloSchema.shape.agentId.prefault(() => hostname()),
    labels: helloSchema.shape.labels.default({}),
    stateDir: pathSchema.default(DEFAULT_STATE_DIR),
    drainPeriod: durationSchema(0).default(5_000),
    resync: durationSchema(1).default(10_000),
    hybrid: hybridSchema.optional(),
    /**
     * The backends this agent may change: names, or patterns with `*`. Absent: every backend,
     * as before the list existed, so an upgraded agent keeps serving (check-config warns).
     */
    manage: manageListSchema.optional(),
    /** Prometheus /metrics on this loopback HOST:PORT; absent: none. */
    metricsListen: listenSchema
      .refine((text) => isLoopbackListen(text), "must be a loopback HOST:PORT (127.0.0.1:7902): the agent's local endpoints are not for the network")
      .optional(),
    /** mTLS to the controller: the fleet CA, this agent's certificate (its id in the SAN) and key. */
    tls: tlsFilesSchema.optional(),
    /** Plaintext to a controller off loopback, said in as many words (then a warning at start). */
    insecure: z.boolean().optional(),
    /** Absent: HAFLEET_LOG_LEVEL, else info. */
    logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).optional(),
  })
  .superRefine((config, ctx) => {
    if (config.hybrid !== undefined && Array.isArray(config.sockets) && config.sockets.length > 1) {
      ctx.addIssue({ code: "custom", path: ["sockets"], message: "hybrid mode manages one HAProxy (one config file): list one socket", input: config.sockets });
    }
  })
  .superRefine(
    (config, ctx) => {
      if (config.tls !== undefined && config.insecure === true) {
        ctx.addIssue({ code: "custom", path: ["insecure"], message: "contradicts the tls block: remove one of them", input: true });
      }
      const remote = config.tls === undefined && config.insecure !== true ? remoteController(config.controllers) : undefined;
      if (remote !== undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["controllers", config.controllers.indexOf(remote)],
          message: REMOTE_NEEDS_TLS,
          input: remote,
        });
      }
    },
    // Only once every field passed: the rule reads controllers, tls and insecure as valid values.
    { when: (payload) => payload.issues.length === 0 },
  );

export type AgentConfig = z.output<typeof agentConfigSchema>;
/** The configuration as written, before defaults and duration parsing. */
export type AgentConfigInput = z.input<typeof agentConfigSchema>;
export type HybridConfig = NonNullable<AgentConfig["hybrid"]>;

/**
 * The warning an agent logs at start when `insecure` lets it talk plaintext to a controller off
 * loopback (the schema refuses that otherwise), or null.
 */
export function plaintextWarning(config: Pick<AgentConfig, "controllers" | "tls" | "insecure">): string | null {
  if (config.tls !== undefined || config.insecure !== true) return null;
  const remote = remoteController(config.controllers);
  return remote === undefined ? null : `insecure: plaintext to the controller ${remote}: anyone in the path could push any desired state`;
}

/**
 * What check-config says of a file without `manage`: valid, but the agent would take over
 * any backend a controller's mapping names, hand-written ones included. Null when it has one.
 */
export function manageWarning(config: Pick<AgentConfig, "manage">): string | null {
  if (config.manage !== undefined) return null;
  return "no 'manage' list: this agent changes every backend the controller names, hand-written ones included; list the backends hafleet owns here, e.g. manage: [be_app, \"be_web_*\"] ('*' says every backend on purpose)";
}

function remoteController(controllers: readonly string[]): string | undefined {
  return controllers.find((address) => !isLoopbackHost(controllerHost(address)));
}

/** The host of HOST:PORT or [IPv6]:PORT. */
function controllerHost(address: string): string {
  return address.replace(/:[0-9]+$/, "").replace(/^\[(.*)\]$/, "$1");
}
