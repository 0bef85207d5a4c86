import { timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { promisify } from "node:util";
import { gzip } from "node:zlib";
import type { Logger } from "pino";
import { z } from "zod";
import { InvalidInputError } from "../../agent/errors.js";
import { parseJsonWith } from "../../agent/model/validate.js";
import { listenFailure } from "../../agent/errors.js";
import { isLoopbackHost, listenHttp, type RunningHttpServer } from "../../agent/metrics/http-endpoint.js";
import { parseListen } from "../config/config-values.js";
import type { AuditEntry, AuditLog } from "./audit-log.js";
import { STATUS_PAGE_HEADERS } from "./page/status-page.js";
import { parseEndpointCondition, type EndpointCondition } from "../status/endpoint-condition.js";
import { parseSelector } from "../status/label-selector.js";
import { filterStatus, type StatusFilter } from "../status/fleet-status.js";
import type { FleetStatus } from "../status/status-schema.js";

/*
 * The controller's HTTP side: the status API, the page, /metrics, and the operator's actions
 * (freeze, rollout steps). Reading is open on a loopback address; every action needs the token,
 * and on any other address so does reading: this API can say where every load balancer is.
 */

export const ROLLOUT_ACTIONS = ["pause", "resume", "abort", "rollback", "retry"] as const;
export type RolloutAction = (typeof ROLLOUT_ACTIONS)[number];

/** An operator action refused for a reason the operator can act on (409 Conflict). */
export class ActionRefused extends Error {}

export interface ApiHandlers {
  /** `endpoints`: say per agent whether HAProxy serves these (the status API's ?endpoint=). */
  status(query?: { endpoints?: readonly EndpointCondition[] }): FleetStatus;
  /** Resolve once the freeze is stored: the answer promises it survives a restart. */
  freeze(reason: string): Promise<void>;
  unfreeze(): Promise<void>;
  /** Throws ActionRefused when the rollout cannot take the action now. */
  rollout(action: RolloutAction): void;
  /** Drops a departed agent; throws ActionRefused when it is connected or unknown. */
  forget(agent: string): Promise<void>;
  /** Keeps an agent out of rollouts (reason given) or lets it back in (null); resolves once stored. */
  cordon(agent: string, reason: string | null): Promise<void>;
  metrics(): Promise<{ contentType: string; body: string }>;
  /** Static assets by URL path: the status page. */
  assets: ReadonlyMap<string, { contentType: string; body: string }>;
}

export interface ApiServerOptions {
  listen: string;
  /** Required of every action; null: actions are refused (no token configured). */
  token: string | null;
  /**
   * Off loopback, reads take this token or the operator's: Prometheus and the page need no power
   * to act. null: only the operator token reads.
   */
  readToken?: string | null;
  /** Reads on a loopback listen need no token (default true). */
  openLoopbackReads?: boolean;
  /** Every action, done or refused, is recorded here. */
  audit?: AuditLog;
  handlers: ApiHandlers;
  logger: Logger;
}

export type RunningApiServer = RunningHttpServer;

const MAX_BODY_BYTES = 16 * 1024;
const GZIP_FROM_BYTES = 16 * 1024;
const JSON_TYPE = "application/json; charset=utf-8";
const gzipText = promisify(gzip) as (text: string) => Promise<Buffer>;
const freezeBodySchema = z.strictObject({ reason: z.string().min(1, "must say why").max(512, "must be at most 512 characters") });
const agentIdSchema = z.string().min(1, "must name the agent").max(253, "must be at most 253 characters");
const agentBodySchema = z.strictObject({ agent: agentIdSchema });
const cordonBodySchema = z.strictObject({ agent: agentIdSchema, reason: z.string().min(1, "must say why").max(512, "must be at most 512 characters") });
const MAX_ENDPOINTS = 16;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** The paths read with GET or HEAD; any other method on them is a 405 naming the allowed ones. */
const READ_PATHS = new Set(["/healthz", "/metrics", "/api/v1/status", "/api/v1/rollout", "/api/v1/audit"]);

/**
 * On a loopback listen reads need no token, so a web page on another site must not reach them
 * through a name it points at 127.0.0.1 (DNS rebinding): only a Host that is itself loopback.
 */
function isLoopbackHostHeader(header: string | undefined): boolean {
  if (header === undefined) return false;
  const host = header.startsWith("[") ? header.slice(1, header.indexOf("]")) : header.replace(/:\d+$/, "");
  return isLoopbackHost(host);
}

export async function startApiServer(options: ApiServerOptions): Promise<RunningApiServer> {
  const { host, port } = parseListen(options.listen);
  const openReads = isLoopbackHost(host) && options.openLoopbackReads !== false;
  const server = createServer((request, response) => {
    handle(request, response, options, openReads).catch((error: unknown) => {
      const status = error instanceof HttpError ? error.status : error instanceof InvalidInputError ? 400 : error instanceof ActionRefused ? 409 : 500;
      if (status === 500) options.logger.error({ err: error, url: request.url }, "status API request failed");
      send(response, status, JSON_TYPE, JSON.stringify({ error: (error as Error).message }), error instanceof HttpError ? error.headers : {});
    });
  });
  const running = await listenHttp(server, host, port).catch((error: unknown) => {
    throw listenFailure(options.listen, error, "--http (http.listen)");
  });
  const bound = running.port;
  options.logger.info({ listen: options.listen, port: bound, actions: options.token === null ? "refused: no token configured" : "need the token" }, "status API listening");
  return running;
}

async function handle(request: IncomingMessage, response: ServerResponse, options: ApiServerOptions, openReads: boolean): Promise<void> {
  const url = new URL(request.url ?? "/", "http://controller");
  const { handlers } = options;
  const method = request.method ?? "GET";
  const asset = handlers.assets.get(url.pathname);
  const isRead = method === "GET" || method === "HEAD";
  if (!isRead && (asset !== undefined || READ_PATHS.has(url.pathname))) throw new HttpError(405, `${url.pathname} takes GET or HEAD`, { allow: "GET, HEAD" });
  // A liveness probe carries no token, and says nothing of the fleet.
  if (isRead && url.pathname === "/healthz") return send(response, 200, "text/plain; charset=utf-8", "ok\n");
  if (openReads && !isLoopbackHostHeader(request.headers.host)) throw new HttpError(403, `refused: Host ${JSON.stringify((request.headers.host ?? "").slice(0, 64))} is not this loopback address (a page from another site, through DNS rebinding?)`);
  // The page's own files hold no fleet data, and a browser cannot send a token for them: the
  // page asks for one and sends it with its API calls.
  if (isRead && asset !== undefined) return send(response, 200, asset.contentType, asset.body);
  if (isRead && !openReads) authorize(request, options.token, options.readToken ?? null);

  if (isRead && url.pathname === "/metrics") {
    const { contentType, body } = await handlers.metrics();
    return send(response, 200, contentType, body);
  }
  if (isRead && url.pathname === "/api/v1/status") {
    const endpoints = url.searchParams.getAll("endpoint");
    if (endpoints.length > MAX_ENDPOINTS) throw new HttpError(400, `at most ${MAX_ENDPOINTS} endpoint parameters`);
    const query = endpoints.length === 0 ? {} : { endpoints: endpoints.map((text) => parseEndpointCondition("endpoint", text)) };
    const body = JSON.stringify(filterStatus(handlers.status(query), statusFilter(url)));
    // 10,000 agents are ~8 MB of JSON, polled every 2 s by each open page: a tenth of that gzipped.
    if (!/\bgzip\b/.test(request.headers["accept-encoding"] ?? "") || body.length < GZIP_FROM_BYTES) return send(response, 200, JSON_TYPE, body);
    return send(response, 200, JSON_TYPE, await gzipText(body), { "content-encoding": "gzip", vary: "accept-encoding" });
  }
  if (isRead && url.pathname === "/api/v1/rollout") return sendJson(response, 200, { rollout: handlers.status().rollout });
  if (isRead && url.pathname === "/api/v1/audit") return sendJson(response, 200, { file: options.audit?.path ?? null, entries: options.audit?.entries() ?? [] });

  const action = actionOf(url.pathname);
  if (action === null) throw new HttpError(404, `no such resource: ${url.pathname}`);
  if (method !== "POST") throw new HttpError(405, `${url.pathname} takes POST`, { allow: "POST" });
  authorize(request, options.token, null);
  const body = await readBody(request);
  const audited = (outcome: AuditEntry["outcome"], detail: Record<string, string>, error?: string): Promise<void> =>
    options.audit?.record({ at: Date.now(), action, by: "operator-token", from: request.socket.remoteAddress ?? "?", detail, outcome, ...(error === undefined ? {} : { error }) }) ?? Promise.resolve();
  try {
    await act(action, body, handlers, (detail) => audited("done", detail));
  } catch (error) {
    await audited("refused", {}, (error as Error).message);
    throw error;
  }
  const after = handlers.status();
  return sendJson(response, 200, { ok: true, frozen: after.frozen, rollout: after.rollout });
}

/** Carries out an action; `done` is told the request's own fields once it succeeded. */
async function act(action: (typeof AGENT_ACTIONS)[number] | RolloutAction, body: string, handlers: ApiHandlers, done: (detail: Record<string, string>) => Promise<void>): Promise<void> {
  if (action === "freeze") {
    const { reason } = parseJsonWith(freezeBodySchema, body === "" ? "{}" : body, "freeze request");
    await handlers.freeze(reason);
    await done({ reason });
  } else if (action === "unfreeze") {
    await handlers.unfreeze();
    await done({});
  } else if (action === "forget" || action === "uncordon") {
    const { agent } = parseJsonWith(agentBodySchema, body === "" ? "{}" : body, `${action} request`);
    await (action === "forget" ? handlers.forget(agent) : handlers.cordon(agent, null));
    await done({ agent });
  } else if (action === "cordon") {
    const { agent, reason } = parseJsonWith(cordonBodySchema, body === "" ? "{}" : body, "cordon request");
    await handlers.cordon(agent, reason);
    await done({ agent, reason });
  } else {
    handlers.rollout(action);
    await done({});
  }
}

const AGENT_ACTIONS = ["freeze", "unfreeze", "forget", "cordon", "uncordon"] as const;

function actionOf(path: string): (typeof AGENT_ACTIONS)[number] | RolloutAction | null {
  const plain = AGENT_ACTIONS.find((action) => path === `/api/v1/${action}`);
  if (plain !== undefined) return plain;
  const match = /^\/api\/v1\/rollout\/([a-z]+)$/.exec(path);
  const action = match?.[1];
  return action !== undefined && (ROLLOUT_ACTIONS as readonly string[]).includes(action) ? (action as RolloutAction) : null;
}

function statusFilter(url: URL): StatusFilter {
  const filter: StatusFilter = {};
  const agent = url.searchParams.get("agent");
  const backend = url.searchParams.get("backend");
  if (agent !== null) filter.agent = agent;
  if (backend !== null) filter.backend = backend;
  if (url.searchParams.has("problems")) filter.problems = true;
  const selector = url.searchParams.getAll("selector");
  if (selector.length > 0) filter.selector = parseSelector(selector, "selector");
  return filter;
}

/** The operator token, or for a read also the read token; compared in constant time. */
function authorize(request: IncomingMessage, token: string | null, readToken: string | null): void {
  const accepted = [token, readToken].filter((candidate): candidate is string => candidate !== null);
  if (accepted.length === 0) throw new HttpError(403, "refused: the controller has no token configured (http.tokenFile), so it takes no actions over HTTP");
  // The scheme is case-insensitive (RFC 9110 11.1): `bearer` is as good as `Bearer`.
  const given = /^Bearer +(\S+) *$/i.exec(request.headers.authorization ?? "")?.[1];
  if (given === undefined) throw new HttpError(401, "refused: this needs the controller's token (Authorization: Bearer TOKEN)", { "www-authenticate": 'Bearer realm="hafleet"' });
  const matches = accepted.map((candidate) => {
    const [a, b] = [Buffer.from(given), Buffer.from(candidate)];
    return a.length === b.length && timingSafeEqual(a, b);
  });
  if (!matches.includes(true)) throw new HttpError(403, readToken === null ? "refused: wrong token (actions take the operator token only)" : "refused: wrong token");
}

async function readBody(request: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `request body over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

function sendJson(response: ServerResponse, status: number, value: unknown): void {
  send(response, status, JSON_TYPE, JSON.stringify(value));
}

function send(response: ServerResponse, status: number, contentType: string, body: string | Buffer, headers: Record<string, string> = {}): void {
  if (response.headersSent) return;
  response.writeHead(status, { ...STATUS_PAGE_HEADERS, "content-type": contentType, ...headers });
  response.end(body);
}
