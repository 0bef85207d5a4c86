import { InvalidInputError, type InputIssue } from "../../agent/errors.js";
import { isLoopbackHost } from "../../agent/metrics/http-endpoint.js";
import type { TlsFiles } from "../../agent/tls/tls-files.js";
import { parseListen } from "../config/config-values.js";

/*
 * The controller can reconfigure every load balancer of the fleet: whoever reaches its gRPC
 * port unauthenticated could pose as any agent and read any agent's desired state. So
 * plaintext only on loopback, or when the configuration says so in as many words.
 */

export type Transport = { kind: "mtls"; files: TlsFiles } | { kind: "plaintext"; warning: string | null };

export interface TransportSettings {
  listen: string;
  tls?: TlsFiles | undefined;
  /** Absent: false. */
  insecure?: boolean | undefined;
}

export const PLAINTEXT_WARNING = "controller listening without TLS: any host that reaches this port can pose as any agent";

/** Why these settings are refused (the issue names the field), or null. */
export function transportProblem(settings: TransportSettings): InputIssue | null {
  if (settings.tls !== undefined) {
    return settings.insecure === true ? { path: "insecure", message: "contradicts the tls block: remove one of them", value: true } : null;
  }
  if (settings.insecure === true || isLoopbackHost(parseListen(settings.listen).host)) return null;
  return { path: "listen", message: "needs tls (ca, cert, key) or insecure: true, since it is not a loopback address", value: settings.listen };
}

/** How the controller listens; throws InvalidInputError where transportProblem() finds one. */
export function transportFor(settings: TransportSettings): Transport {
  const problem = transportProblem(settings);
  if (problem !== null) throw new InvalidInputError("controller config", [problem]);
  if (settings.tls !== undefined) return { kind: "mtls", files: settings.tls };
  return { kind: "plaintext", warning: isLoopbackHost(parseListen(settings.listen).host) ? null : PLAINTEXT_WARNING };
}
