import { dirname, isAbsolute, resolve } from "node:path";
import type { ParseArgsConfig } from "node:util";
import type { z } from "zod";
import { loadConfigFile, parseConfigText, type ConfigFormat } from "../../agent/config/config-file.js";
import { InvalidInputError, type InputIssue } from "../../agent/errors.js";
import { issuesOf } from "../../agent/model/validate.js";
import { controllerConfigSchema, type ConsulDiscovery, type ControllerConfig, type ControllerConfigInput } from "./controller-config.js";

export type { ConfigFormat };

/** Reads, parses and validates a controller config file; the paths in it are made absolute. */
export async function loadControllerConfig(path: string): Promise<ControllerConfig> {
  const config = await loadConfigFile(controllerConfigSchema, path);
  // A path in a config file means "next to this file", wherever the controller started.
  const near = (file: string): string => (isAbsolute(file) ? file : resolve(dirname(path), file));
  const { discovery, tls, http, stateDir } = config;
  return {
    ...config,
    discovery: "file" in discovery ? { file: near(discovery.file) } : { consul: nearConsulFiles(discovery.consul, near) },
    http: {
      ...http,
      ...(http.tokenFile === undefined ? {} : { tokenFile: near(http.tokenFile) }),
      ...(http.readTokenFile === undefined ? {} : { readTokenFile: near(http.readTokenFile) }),
    },
    ...(tls === undefined ? {} : { tls: { ca: near(tls.ca), cert: near(tls.cert), key: near(tls.key) } }),
    ...(stateDir === undefined ? {} : { stateDir: near(stateDir) }),
  };
}

/** The consul block's files (CA, client certificate and key, token file), next to the config file. */
function nearConsulFiles(consul: ConsulDiscovery, near: (file: string) => string): ConsulDiscovery {
  const result = { ...consul };
  for (const field of ["caFile", "certFile", "keyFile", "tokenFile"] as const) {
    const file = consul[field];
    if (file !== undefined) result[field] = near(file);
  }
  return result;
}

/** The pure half of loading: text in, config or InvalidInputError (with lines) out. */
export function parseControllerConfigText(text: string, format: ConfigFormat, source: string): ControllerConfig {
  return parseConfigText(controllerConfigSchema, text, format, source);
}

/* ---------------------------------------------------------------- quick-start flags */

type FlagOptions = NonNullable<ParseArgsConfig["options"]>;

/** The quick-start flags, for `parseFlags`, so the CLI and `configFromFlags` cannot drift apart. */
export const quickStartFlagOptions = {
  listen: { type: "string" },
  http: { type: "string" },
  "token-file": { type: "string" },
  "tls-ca": { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  insecure: { type: "boolean" },
  consul: { type: "string" },
  "catalog-file": { type: "string" },
  "consul-token": { type: "string" },
  "consul-dc": { type: "string" },
  map: { type: "string", multiple: true },
} as const satisfies FlagOptions;

export interface QuickStartFlags {
  listen?: string;
  http?: string;
  "token-file"?: string;
  "tls-ca"?: string;
  "tls-cert"?: string;
  "tls-key"?: string;
  insecure?: boolean;
  consul?: string;
  "catalog-file"?: string;
  "consul-token"?: string;
  "consul-dc"?: string;
  map?: string[];
}

const MAP_USAGE = "must be SERVICE=BACKEND or SERVICE#TAG=BACKEND";

/**
 * The same config as a file would give, from flags: one backend per `--map`, every agent
 * gets every backend, all other settings at their defaults. Issues name the flag.
 */
export function configFromFlags(flags: QuickStartFlags, source = "command line"): ControllerConfig {
  const issues: InputIssue[] = [];
  const consul = flags.consul;
  const file = flags["catalog-file"];
  if ((consul === undefined) === (file === undefined)) {
    issues.push({ path: "--consul", message: "give exactly one of --consul URL, --catalog-file FILE" });
  }
  for (const flag of ["consul-token", "consul-dc"] as const) {
    if (flags[flag] !== undefined && consul === undefined) issues.push({ path: `--${flag}`, message: "only goes with --consul" });
  }
  const tlsFlags = [flags["tls-ca"], flags["tls-cert"], flags["tls-key"]];
  const tls = tlsFlags.every((file) => file !== undefined) ? { ca: tlsFlags[0]!, cert: tlsFlags[1]!, key: tlsFlags[2]! } : null;
  if (flags["token-file"] !== undefined && flags.http === "off") issues.push({ path: "--token-file", message: "the token is for the status API's actions: it does not go with --http off" });
  if (tls === null && tlsFlags.some((file) => file !== undefined)) issues.push({ path: "--tls-ca", message: "give all three of --tls-ca, --tls-cert, --tls-key, or none" });
  const maps = flags.map ?? [];
  if (maps.length === 0) issues.push({ path: "--map", message: `give at least one --map; each ${MAP_USAGE}` });
  const backends = maps.map((text) => {
    const mapping = parseMapFlag(text);
    if (mapping === null) issues.push({ path: "--map", message: MAP_USAGE, value: text });
    return mapping;
  });
  if (issues.length > 0) throw new InvalidInputError(source, issues);

  const input: ControllerConfigInput = {
    ...(flags.listen === undefined ? {} : { listen: flags.listen }),
    ...(flags.http === undefined && flags["token-file"] === undefined
      ? {}
      : {
          http: {
            ...(flags.http === undefined ? {} : { listen: flags.http === "off" ? null : flags.http }),
            ...(flags["token-file"] === undefined ? {} : { tokenFile: flags["token-file"] }),
          },
        }),
    ...(tls === null ? {} : { tls }),
    ...(flags.insecure === true ? { insecure: true } : {}),
    discovery:
      consul === undefined
        ? { file: file ?? "" }
        : {
            consul: {
              address: consul,
              ...(flags["consul-token"] === undefined ? {} : { token: flags["consul-token"] }),
              ...(flags["consul-dc"] === undefined ? {} : { datacenter: flags["consul-dc"] }),
            },
          },
    backends: backends.filter((mapping) => mapping !== null),
  };
  const result = controllerConfigSchema.safeParse(input);
  if (!result.success) {
    const plain = issuesOf(result.error, input);
    throw new InvalidInputError(source, result.error.issues.map((issue, index) => flagIssue(issue, plain[index]?.path ?? "", flags)));
  }
  return result.data;
}

function parseMapFlag(text: string): { service: string; tag?: string; backend: string } | null {
  const equals = text.indexOf("=");
  if (equals < 0) return null;
  const left = text.slice(0, equals);
  const backend = text.slice(equals + 1);
  const hash = left.indexOf("#");
  if (hash < 0) return { service: left, backend };
  return { service: left.slice(0, hash), tag: left.slice(hash + 1), backend };
}

const FLAG_OF_PATH: Record<string, keyof QuickStartFlags> = {
  listen: "listen",
  "http.listen": "http",
  insecure: "insecure",
  "tls.ca": "tls-ca",
  "tls.cert": "tls-cert",
  "tls.key": "tls-key",
  "discovery.consul.address": "consul",
  "discovery.consul.token": "consul-token",
  "discovery.consul.datacenter": "consul-dc",
  "discovery.file": "catalog-file",
};

const MAP_PART: Record<string, string> = { service: "SERVICE", tag: "TAG", backend: "BACKEND" };

/** `path` is the issue's field path as text, `backends[0].service`. */
function flagIssue(issue: z.ZodError["issues"][number], path: string, flags: QuickStartFlags): InputIssue {
  const [first, index, field] = issue.path;
  if (first === "backends" && typeof index === "number") {
    const part = typeof field === "string" ? (MAP_PART[field] ?? field) : undefined;
    const message = part === undefined ? issue.message : `${part} ${issue.message}`;
    const value = flags.map?.[index];
    return value === undefined ? { path: "--map", message } : { path: "--map", message, value };
  }
  const flag = FLAG_OF_PATH[path];
  if (flag === undefined) return { path, message: issue.message };
  const given = flag === "consul-token" ? undefined : flags[flag];
  const value = typeof given === "boolean" ? undefined : given;
  return value === undefined ? { path: `--${flag}`, message: issue.message } : { path: `--${flag}`, message: issue.message, value };
}
