import { readFileSync, statSync } from "node:fs";
import { resolve } from "node:path";
import { InvalidInputError } from "../../../agent/errors.js";

/*
 * Credentials the way Consul's own tools take them: a token file re-read when it changes (a
 * Vault agent or consul-template rotates it in place), and Consul's environment variables when
 * the config leaves a setting out (https://developer.hashicorp.com/consul/commands#environment-variables).
 */

/** How often the token file's modification time is looked at, at most. */
const TOKEN_FILE_CHECK_MS = 1_000;

/** The token in a file: its first line, trimmed. An empty file is refused. */
function readTokenFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new InvalidInputError("Consul options", [{ path: "tokenFile", message: `cannot read it: ${(error as Error).message}`, value: path }]);
  }
  const token = (text.split("\n")[0] ?? "").trim();
  if (!/^[\x21-\x7e]{1,256}$/.test(token)) throw new InvalidInputError("Consul options", [{ path: "tokenFile", message: "its first line must be a token of 1 to 256 visible ASCII characters", value: path }]);
  return token;
}

/**
 * A token that follows its file: read now (throws when it cannot be), then again whenever the
 * file's modification time or size changes. A file that turns unreadable or empty keeps the last
 * good token in use, and `onProblem` is told once per change.
 */
export function tokenFromFile(path: string, onProblem: (message: string) => void = () => {}, now: () => number = Date.now): () => string {
  let token = readTokenFile(path);
  let stamp = stampOf(path);
  let checkedAt = now();
  let lastProblem: string | null = null;
  return () => {
    if (now() - checkedAt < TOKEN_FILE_CHECK_MS) return token;
    checkedAt = now();
    const current = stampOf(path);
    if (current === stamp) return token;
    stamp = current;
    try {
      token = readTokenFile(path);
      lastProblem = null;
    } catch (error) {
      const message = `${path}: ${(error as Error).message}; the last token read stays in use`;
      if (message !== lastProblem) onProblem(message);
      lastProblem = message;
    }
    return token;
  };
}

function stampOf(path: string): string {
  try {
    const stat = statSync(path);
    return `${stat.mtimeMs}:${stat.size}:${stat.ino}`;
  } catch {
    return "missing";
  }
}

/** The consul block's fields that Consul's environment variables may supply. */
export interface ConsulEnvFields {
  address?: string;
  token?: string;
  tokenFile?: string;
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  tlsServerName?: string;
  namespace?: string;
  partition?: string;
}

/**
 * Fills what the config leaves out from Consul's environment variables; what the config says
 * wins. `CONSUL_HTTP_ADDR` may lack a scheme (`127.0.0.1:8500`): https when `CONSUL_HTTP_SSL`
 * is true, else http, as Consul's api package reads it. A token given in the config (inline
 * or as a file) is not mixed with one from the environment.
 */
export function consulFromEnvironment<T extends Record<string, unknown>>(config: T, env: Readonly<Record<string, string | undefined>>): T & ConsulEnvFields {
  const value = (name: string): string | undefined => {
    const text = env[name];
    return text === undefined || text.trim() === "" ? undefined : text.trim();
  };
  const filled: Record<string, unknown> = { ...config };
  const fill = (field: keyof ConsulEnvFields, name: string, isPath = false): void => {
    const text = value(name);
    // A path from the environment is the shell's, relative to where the controller started.
    if (filled[field] === undefined && text !== undefined) filled[field] = isPath ? resolve(text) : text;
  };
  const address = value("CONSUL_HTTP_ADDR");
  if (filled["address"] === undefined && address !== undefined) {
    const ssl = /^(1|true)$/i.test(value("CONSUL_HTTP_SSL") ?? "");
    filled["address"] = /^[a-z][a-z0-9+.-]*:\/\//i.test(address) ? address : `${ssl ? "https" : "http"}://${address}`;
  }
  if (filled["token"] === undefined && filled["tokenFile"] === undefined) {
    fill("token", "CONSUL_HTTP_TOKEN");
    if (filled["token"] === undefined) fill("tokenFile", "CONSUL_HTTP_TOKEN_FILE", true);
  }
  fill("caFile", "CONSUL_CACERT", true);
  fill("certFile", "CONSUL_CLIENT_CERT", true);
  fill("keyFile", "CONSUL_CLIENT_KEY", true);
  fill("tlsServerName", "CONSUL_TLS_SERVER_NAME");
  fill("namespace", "CONSUL_NAMESPACE");
  fill("partition", "CONSUL_PARTITION");
  return filled as T & ConsulEnvFields;
}
