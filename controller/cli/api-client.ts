import { readFile } from "node:fs/promises";
import type { z } from "zod";
import { ControllerApiError, InvalidInputError } from "../../agent/errors.js";
import { parseWith } from "../../agent/model/validate.js";
import { DEFAULT_HTTP_LISTEN } from "../config/controller-config.js";
import { fleetStatusSchema, type FleetStatus } from "../status/status-schema.js";

/** The fleet commands' view of the controller: its HTTP API, every answer validated. */

export const API_FLAG_OPTIONS = {
  url: { type: "string" },
  "token-file": { type: "string" },
} as const;

export const API_FLAGS_HELP = `  --url URL         the controller's status API (default $HAFLEET_URL, else http://${DEFAULT_HTTP_LISTEN})
  --token-file F    the token for actions (default $HAFLEET_TOKEN_FILE); $HAFLEET_TOKEN also works`;

const REQUEST_TIMEOUT_MS = 10_000;

export class ApiClient {
  private constructor(
    readonly base: URL,
    private readonly token: string | null,
  ) {}

  static async fromFlags(flags: { url?: string | undefined; "token-file"?: string | undefined }): Promise<ApiClient> {
    const text = flags.url ?? process.env["HAFLEET_URL"] ?? `http://${DEFAULT_HTTP_LISTEN}`;
    if (!URL.canParse(text) || !["http:", "https:"].includes(new URL(text).protocol)) {
      throw new InvalidInputError("--url", [{ path: "--url", message: "must be an http:// or https:// URL", value: text }]);
    }
    const tokenFile = flags["token-file"] ?? process.env["HAFLEET_TOKEN_FILE"];
    const token = tokenFile === undefined ? (process.env["HAFLEET_TOKEN"] ?? null) : (await readFile(tokenFile, "utf8")).split("\n")[0]!.trim();
    return new ApiClient(new URL(text.endsWith("/") ? text : `${text}/`), token);
  }

  async status(query: Record<string, string | string[] | boolean | undefined> = {}): Promise<FleetStatus> {
    const url = new URL("api/v1/status", this.base);
    for (const [key, value] of Object.entries(query)) {
      if (value === true) url.searchParams.set(key, "1");
      else if (typeof value === "string") url.searchParams.set(key, value);
      else if (Array.isArray(value)) for (const each of value) url.searchParams.append(key, each);
    }
    return this.request(url, "GET", undefined, fleetStatusSchema);
  }

  /** POSTs an action (freeze, unfreeze, rollout/pause, ...); the controller's refusal is thrown. */
  async act(path: string, body: object = {}): Promise<unknown> {
    return this.request(new URL(`api/v1/${path}`, this.base), "POST", body, null);
  }

  private async request<S extends z.ZodType>(url: URL, method: string, body: object | undefined, schema: S | null): Promise<z.output<S>> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (this.token !== null) headers["authorization"] = `Bearer ${this.token}`;
    let response: Response;
    try {
      response = await fetch(url, { method, headers, body: body === undefined ? null : JSON.stringify(body), signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    } catch (error) {
      const cause = (error as { cause?: { message?: string } }).cause?.message;
      throw new ControllerApiError(url.href, `unreachable (${cause ?? (error as Error).message})`);
    }
    const text = await response.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new ControllerApiError(url.href, `answered ${response.status} with something that is not JSON`, response.status);
    }
    if (!response.ok) {
      const message = typeof (json as { error?: unknown }).error === "string" ? (json as { error: string }).error : `HTTP ${response.status}`;
      throw new ControllerApiError(url.href, message, response.status);
    }
    return schema === null ? (json as z.output<S>) : parseWith(schema, json, url.href);
  }
}
