import { dirname, isAbsolute, resolve } from "node:path";
import type { ParseArgsConfig } from "node:util";
import { InvalidInputError, type InputIssue } from "../errors.js";
import { hybridFlagOptions, openHybridSession, parseHybridFlags, type HybridFlags, type HybridSession, type HybridSettings } from "../hybrid/hybrid-session.js";
import { parseTemplateVars } from "../hybrid/render-config.js";
import { issuesOf } from "../model/validate.js";
import { agentConfigSchema, manageWarning, REMOTE_NEEDS_TLS, REMOTE_NEEDS_TLS_FLAGS, varTexts, type AgentConfig, type AgentConfigInput, type HybridConfig } from "./agent-config.js";
import { stateDirProblem, tlsFileIssues } from "./check-files.js";
import { loadConfigFile, type ConfigFormat } from "./config-file.js";

/** Reads, parses and validates an agent config file; relative paths in it are made absolute. */
export async function loadAgentConfig(path: string, format?: ConfigFormat): Promise<AgentConfig> {
  return withPathsFrom(dirname(path), await loadConfigFile(agentConfigSchema, path, format));
}

/** A config file read and prepared as `run --config` starts it; issues name the file. */
export async function prepareAgentFromFile(path: string, format?: ConfigFormat): Promise<PreparedAgent> {
  return prepareAgent(await loadAgentConfig(path, format), path);
}

/** A path in a config file means "next to this file", wherever the agent started. */
function withPathsFrom(dir: string, config: AgentConfig): AgentConfig {
  const absolute = (path: string) => (isAbsolute(path) ? path : resolve(dir, path));
  // A socket without a `/` is HOST:PORT.
  const socket = (text: string) => (text.includes("/") ? absolute(text) : text);
  const { hybrid, tls } = config;
  return {
    ...config,
    sockets: config.sockets.map(socket),
    stateDir: absolute(config.stateDir),
    ...(tls === undefined ? {} : { tls: { ca: absolute(tls.ca), cert: absolute(tls.cert), key: absolute(tls.key) } }),
    ...(hybrid === undefined
      ? {}
      : {
          hybrid: {
            ...hybrid,
            configTemplate: absolute(hybrid.configTemplate),
            configOut: absolute(hybrid.configOut),
            stateFile: absolute(hybrid.stateFile),
            masterSocket: socket(hybrid.masterSocket),
          },
        }),
  };
}

/** What `run` needs before it starts: the settings, and hybrid mode's template, compiled. */
export interface PreparedAgent {
  config: AgentConfig;
  hybrid: HybridSession | undefined;
  /** What is valid but probably not meant: check-config prints these, `run` logs them. */
  warnings: string[];
}

/**
 * Everything that can refuse the configuration, done before anything runs with it: the files it
 * names (TLS, the hybrid template) and the state dir, every problem found, not just the first.
 * `source` and `nameOf` say where the settings came from (a file and its fields, or the flags).
 */
export async function prepareAgent(config: AgentConfig, source = "configuration", nameOf: (field: string) => string = (field) => field): Promise<PreparedAgent> {
  const manage = manageWarning(config);
  const warnings = manage === null ? [] : [manage];
  const issues: InputIssue[] = [];
  if (config.tls !== undefined) issues.push(...(await tlsFileIssues(config.tls, Date.now())));
  const stateDir = await stateDirProblem(config.stateDir);
  if (stateDir !== null) issues.push({ path: "stateDir", message: stateDir });
  let hybrid: HybridSession | undefined;
  try {
    hybrid = config.hybrid === undefined ? undefined : await openHybridSession(hybridSettings(config.hybrid), config.sockets[0]!);
  } catch (error) {
    if (!(error instanceof InvalidInputError)) throw error;
    for (const issue of error.issues) issues.push({ ...issue, path: "hybrid.configTemplate", message: `${error.source}: ${issue.path === "" ? "" : `${issue.path}: `}${issue.message}` });
  }
  if (issues.length > 0) throw new InvalidInputError(source, issues.map((issue) => ({ ...issue, path: nameOf(issue.path) })));
  return { config, hybrid, warnings };
}

/**
 * The settings of a file alone, not the files they name: for a staged copy checked before those
 * are in place (Ansible's `validate`). A start checks them all, as `prepareAgent` does.
 */
export async function checkAgentSettings(path: string, format?: ConfigFormat): Promise<{ warnings: string[] }> {
  const manage = manageWarning(await loadAgentConfig(path, format));
  return { warnings: manage === null ? [] : [manage] };
}

/** `prepareAgent` for the run flags: issues name the flag. */
export function prepareAgentFromFlags(flags: RunFlags): Promise<PreparedAgent> {
  return prepareAgent(agentConfigFromFlags(flags), "command line", flagOf);
}

function hybridSettings(hybrid: HybridConfig): HybridSettings {
  return {
    templatePath: hybrid.configTemplate,
    configFile: hybrid.configOut,
    stateFile: hybrid.stateFile,
    masterSocket: hybrid.masterSocket,
    spareSlots: hybrid.spareSlots,
    varTexts: varTexts(hybrid.vars),
  };
}

/* ---------------------------------------------------------------- run flags */

type FlagOptions = NonNullable<ParseArgsConfig["options"]>;

/** `run`'s flags, for `parseFlags`, so the CLI and `agentConfigFromFlags` cannot drift apart. */
export const runFlagOptions = {
  controller: { type: "string", multiple: true },
  socket: { type: "string", multiple: true },
  id: { type: "string" },
  label: { type: "string", multiple: true },
  manage: { type: "string", multiple: true },
  "state-dir": { type: "string" },
  "drain-period": { type: "string" },
  resync: { type: "string" },
  "metrics-listen": { type: "string" },
  "tls-ca": { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  insecure: { type: "boolean" },
  ...hybridFlagOptions,
} as const satisfies FlagOptions;

export interface RunFlags extends HybridFlags {
  controller?: string[];
  socket?: string[];
  id?: string;
  label?: string[];
  manage?: string[];
  "state-dir"?: string;
  "drain-period"?: string;
  resync?: string;
  "metrics-listen"?: string;
  "tls-ca"?: string;
  "tls-cert"?: string;
  "tls-key"?: string;
  insecure?: boolean;
}

/** The same settings as a config file would give, from flags; issues name the flag. */
export function agentConfigFromFlags(flags: RunFlags, source = "command line"): AgentConfig {
  const hybrid = parseHybridFlags(flags);
  const input: AgentConfigInput = {
    controllers: flags.controller ?? [],
    sockets: flags.socket ?? [],
    // Absent: the schema's default, this host's name, as in a config file.
    ...(flags.id === undefined ? {} : { id: flags.id }),
    labels: parseLabels(flags.label ?? []),
    ...(flags.manage === undefined ? {} : { manage: flags.manage }),
    ...(flags["state-dir"] === undefined ? {} : { stateDir: flags["state-dir"] }),
    ...(flags["drain-period"] === undefined ? {} : { drainPeriod: flags["drain-period"] }),
    ...(flags.resync === undefined ? {} : { resync: flags.resync }),
    ...(flags["metrics-listen"] === undefined ? {} : { metricsListen: flags["metrics-listen"] }),
    ...(flags["tls-ca"] === undefined && flags["tls-cert"] === undefined && flags["tls-key"] === undefined
      ? {}
      : { tls: { ca: flags["tls-ca"] ?? "", cert: flags["tls-cert"] ?? "", key: flags["tls-key"] ?? "" } }),
    ...(flags.insecure === true ? { insecure: true } : {}),
    ...(hybrid === null
      ? {}
      : {
          hybrid: {
            configTemplate: hybrid.templatePath,
            configOut: hybrid.configFile,
            stateFile: hybrid.stateFile,
            masterSocket: hybrid.masterSocket,
            spareSlots: hybrid.spareSlots,
            vars: parseTemplateVars(hybrid.varTexts),
          },
        }),
  };
  const partialTls = partialTlsIssue(flags);
  if (partialTls !== null) throw new InvalidInputError(source, [partialTls]);
  const result = agentConfigSchema.safeParse(input);
  if (!result.success) {
    const issues = issuesOf(result.error, input).map((issue) => ({ ...issue, path: flagOf(issue.path), message: flagWording(issue.message) }));
    throw new InvalidInputError(source, issues);
  }
  return result.data;
}

const TLS_FLAGS = ["--tls-ca", "--tls-cert", "--tls-key"] as const;

/** Some of the three TLS flags but not all: say which are missing, not that one is empty. */
function partialTlsIssue(flags: RunFlags): InputIssue | null {
  const given = TLS_FLAGS.filter((flag) => flags[flag.slice(2) as "tls-ca" | "tls-cert" | "tls-key"] !== undefined);
  if (given.length === 0 || given.length === TLS_FLAGS.length) return null;
  const missing = TLS_FLAGS.filter((flag) => !given.includes(flag));
  return { path: missing[0]!, message: `missing: ${TLS_FLAGS.join(", ")} go together (${given.join(" and ")} given, ${missing.join(" and ")} not)` };
}

/** A schema message in config-file words (`insecure: true`) in flag words (`--insecure`). */
function flagWording(message: string): string {
  return message === REMOTE_NEEDS_TLS ? REMOTE_NEEDS_TLS_FLAGS : message;
}

function parseLabels(texts: readonly string[]): Record<string, string> {
  const labels = new Map<string, string>();
  const issues: InputIssue[] = [];
  for (const text of texts) {
    const at = text.indexOf("=");
    const key = text.slice(0, Math.max(at, 0));
    if (at <= 0) issues.push({ path: "--label", message: "must be KEY=VALUE", value: text });
    else if (labels.has(key)) issues.push({ path: "--label", message: `${key} given twice`, value: text });
    else labels.set(key, text.slice(at + 1));
  }
  if (issues.length > 0) throw new InvalidInputError("command line", issues);
  return Object.fromEntries(labels);
}

const FLAG_OF_FIELD: Record<string, string> = {
  controllers: "--controller",
  sockets: "--socket",
  id: "--id",
  labels: "--label",
  manage: "--manage",
  stateDir: "--state-dir",
  drainPeriod: "--drain-period",
  metricsListen: "--metrics-listen",
  "tls.ca": "--tls-ca",
  "tls.cert": "--tls-cert",
  "tls.key": "--tls-key",
  insecure: "--insecure",
  resync: "--resync",
  "hybrid.configTemplate": "--config-template",
  "hybrid.configOut": "--config-out",
  "hybrid.stateFile": "--state-file",
  "hybrid.masterSocket": "--master-socket",
  "hybrid.spareSlots": "--spare-slots",
  "hybrid.vars": "--var",
};

/** `controllers[1]` -> `--controller`, `hybrid.vars.x` -> `--var`: the flag that was given. */
function flagOf(path: string): string {
  for (let field = path; ; ) {
    const flag = FLAG_OF_FIELD[field];
    if (flag !== undefined) return flag;
    const parent = field.replace(/(\.[^.[]*|\[\d+\])$/, "");
    if (parent === field) return path;
    field = parent;
  }
}
