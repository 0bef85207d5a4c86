import { isIP } from "node:net";
import { z } from "zod";
import { HafleetError } from "../../../agent/errors.js";
import type { DroppedInstance, RawInstance } from "../service-snapshot.js";

/**
 * The answer of Consul's `GET /v1/health/service/:service`, read as untrusted input: lenient
 * about fields we do not use (Consul adds some in every version), strict about those we do.
 * Address, port and weight are passed through untouched, so that the agent's own schema
 * (`toServers`) drops a bad instance with its reason instead of the whole answer failing.
 */

/** Which instances count: `passing` asks Consul for `?passing`; the other filters out `critical`. */
export type HealthPolicy = "passing" | "passing-or-warning";
/** Where an instance's HAProxy weight comes from. */
export type WeightSource = "meta" | "consul";

export const WEIGHT_META_KEY = "hafleet-weight";
const MAX_WEIGHT = 256;

export class ConsulAnswerError extends HafleetError {
  readonly code = "HAFLEET_CONSUL_BAD_ANSWER";
  constructor(
    readonly service: string,
    readonly detail: string,
  ) {
    super(`Consul's answer for service '${service}' is unusable: ${detail}`);
    this.name = "ConsulAnswerError";
  }
}

export const checkStatusSchema = z.enum(["passing", "warning", "critical"]);
export type CheckStatus = z.infer<typeof checkStatusSchema>;

// Go encodes a nil slice or map as null: accepted wherever Consul may send one.
const checkSchema = z.looseObject({
  CheckID: z.string(),
  Status: checkStatusSchema,
});

const weightsSchema = z.looseObject({
  Passing: z.number(),
  Warning: z.number(),
});

// Address, port and weights are optional here on purpose: they are judged later, one by one,
// by toServers and weightOf, whose reasons name the value.
export const healthEntrySchema = z.looseObject({
  Node: z.looseObject({
    Node: z.string(),
    Address: z.unknown().optional(),
    // Judged only when a mapping picks a tagged address (addressOf), so that an odd value drops no one else.
    TaggedAddresses: z.unknown().optional(),
  }),
  Service: z.looseObject({
    ID: z.string().min(1),
    Service: z.string(),
    Address: z.unknown().optional(),
    Port: z.unknown().optional(),
    Meta: z.record(z.string(), z.unknown()).nullish(),
    Weights: z.unknown().optional(),
    TaggedAddresses: z.unknown().optional(),
  }),
  Checks: z.array(checkSchema).nullable(),
});
export type HealthEntry = z.infer<typeof healthEntrySchema>;

/** Only this fails a whole answer: anything but an array of objects. */
export const healthAnswerSchema = z.array(z.record(z.string(), z.unknown()));

export interface AnswerOptions {
  /** The service queried: every entry must belong to it. */
  service: string;
  healthy: HealthPolicy;
  weights: WeightSource;
  /** Default: Service.Address, else Node.Address. */
  address?: AddressChoice;
}

/**
 * Which address of an instance goes to HAProxy: `service` (Service.Address, else Node.Address),
 * `node` (Node.Address), or a tagged one: Service.TaggedAddresses[name] (its address and port)
 * or Node.TaggedAddresses[name] (an address; the service's port).
 */
export type AddressChoice = { from: "service" | "node"; tagged: string | null };

export function parseAddressChoice(text: string): AddressChoice {
  const [from, tagged] = text.split(":", 2) as [string, string | undefined];
  if (from !== "service" && from !== "node") throw new Error(`address must be service, node, service:NAME or node:NAME, not ${JSON.stringify(text)}`);
  return { from, tagged: tagged ?? null };
}

export interface ParsedAnswer {
  /** Healthy instances, not yet validated: `toServers` does that. */
  instances: RawInstance[];
  /** Entries whose structure is wrong, so that neither health nor identity can be trusted. */
  dropped: DroppedInstance[];
  /** Entries left out because a check is not healthy enough: not an error. */
  unhealthy: number;
}

export function parseHealthAnswer(body: string, options: AnswerOptions): ParsedAnswer {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch (error) {
    throw new ConsulAnswerError(options.service, `not valid JSON (${(error as Error).message}): ${preview(body)}`);
  }
  const top = healthAnswerSchema.safeParse(json);
  if (!top.success) {
    const issue = top.error.issues[0];
    const where = issue === undefined || issue.path.length === 0 ? "" : ` at [${issue.path.join("].[")}]`;
    throw new ConsulAnswerError(options.service, `not an array of entries${where}: ${issue?.message ?? "invalid"}`);
  }
  return entriesToInstances(top.data, options);
}

export function entriesToInstances(entries: readonly Record<string, unknown>[], options: AnswerOptions): ParsedAnswer {
  const result: ParsedAnswer = { instances: [], dropped: [], unhealthy: 0 };
  entries.forEach((raw, position) => {
    const outcome = entryToInstance(raw, position, options);
    if (outcome.kind === "instance") result.instances.push(outcome.instance);
    else if (outcome.kind === "dropped") result.dropped.push(outcome.dropped);
    else result.unhealthy += 1;
  });
  if (options.weights === "consul") result.instances = scaleWeights(result.instances);
  return result;
}

/**
 * Consul's weights go up to 65535, HAProxy's stop at 256: when any instance's is above 256,
 * every weight of the answer is scaled by the same factor, so that the largest becomes 256 and
 * the shares stay (300 and 1000 become 77 and 256, not 256 and 256). A weight above 0 never
 * becomes 0 (that would drain the instance).
 */
export function scaleWeights(instances: readonly RawInstance[]): RawInstance[] {
  const numbers = instances.map((instance) => instance.weight).filter((weight): weight is number => typeof weight === "number" && Number.isFinite(weight));
  const largest = numbers.reduce((max, weight) => Math.max(max, weight), 0);
  if (largest <= MAX_WEIGHT) return [...instances];
  return instances.map((instance) => {
    const weight = instance.weight;
    if (typeof weight !== "number" || !Number.isFinite(weight) || weight < 0) return instance;
    return { ...instance, weight: weight === 0 ? 0 : Math.max(1, Math.round((weight * MAX_WEIGHT) / largest)) };
  });
}

export type EntryOutcome = { kind: "instance"; instance: RawInstance } | { kind: "dropped"; dropped: DroppedInstance } | { kind: "unhealthy" };

export function entryToInstance(raw: Record<string, unknown>, position: number, options: AnswerOptions): EntryOutcome {
  const parsed = healthEntrySchema.safeParse(raw);
  if (!parsed.success) {
    const reason = parsed.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`).join("; ");
    return { kind: "dropped", dropped: { id: fallbackId(raw, position), reason } };
  }
  const entry = parsed.data;
  const id = `${entry.Node.Node}/${entry.Service.ID}`;
  // Consul matches service names case-insensitively; anything else here is not ours.
  if (entry.Service.Service.toLowerCase() !== options.service.toLowerCase()) {
    return { kind: "dropped", dropped: { id, reason: `belongs to service '${entry.Service.Service}', not '${options.service}'` } };
  }
  const worst = worstStatus((entry.Checks ?? []).map((check) => check.Status));
  if (!isHealthy(worst, options.healthy)) return { kind: "unhealthy" };

  const weight = weightOf(entry.Service, worst, options.weights);
  if (weight.kind === "invalid") return { kind: "dropped", dropped: { id, reason: weight.reason } };
  const endpoint = addressOf(entry, options.address ?? { from: "service", tagged: null });
  if ("reason" in endpoint) return { kind: "dropped", dropped: { id, reason: endpoint.reason } };
  const { address, port } = endpoint;
  // A DNS name (an external service, consul-esm) is refused by name: HAProxy is given
  // addresses, and a name resolved here would go stale without anyone noticing.
  if (typeof address === "string" && address !== "" && isIP(address) === 0 && /^[A-Za-z0-9.-]+$/.test(address) && /[A-Za-z]/.test(address)) {
    return { kind: "dropped", dropped: { id, reason: `address ${JSON.stringify(address)} is a DNS name: hafleet sends IP addresses only; register the instance with an IP, or pick one with the mapping's address (e.g. service:lan_ipv4)` } };
  }
  const instance: RawInstance = weight.kind === "absent" ? { id, address, port } : { id, address, port, weight: weight.value };
  return { kind: "instance", instance };
}

/** The address (and port) an instance is reached at, as the mapping chose; a missing tagged address is a reason. */
function addressOf(entry: HealthEntry, choice: AddressChoice): { address: unknown; port: unknown } | { reason: string } {
  const service = entry.Service;
  if (choice.tagged === null) {
    if (choice.from === "node") return { address: entry.Node.Address, port: service.Port };
    return { address: typeof service.Address === "string" && service.Address !== "" ? service.Address : entry.Node.Address, port: service.Port };
  }
  if (choice.from === "service") {
    const tagged = taggedOf(service.TaggedAddresses, choice.tagged);
    if (typeof tagged !== "object" || tagged === null) return { reason: `no Service.TaggedAddresses.${choice.tagged}` };
    // Consul sends Address/Port; its health.mdx sample spells them address/port: both are read.
    const fields = tagged as { Address?: unknown; Port?: unknown; address?: unknown; port?: unknown };
    return { address: fields.Address ?? fields.address, port: fields.Port ?? fields.port };
  }
  const tagged = taggedOf(entry.Node.TaggedAddresses, choice.tagged);
  if (tagged === undefined || tagged === null) return { reason: `no Node.TaggedAddresses.${choice.tagged}` };
  return { address: tagged, port: service.Port };
}

const SEVERITY: Record<CheckStatus, number> = { passing: 0, warning: 1, critical: 2 };

/** A node's checks (serfHealth, maintenance) count as much as the service's own. */
export function worstStatus(statuses: readonly CheckStatus[]): CheckStatus {
  return statuses.reduce<CheckStatus>((worst, status) => (SEVERITY[status] > SEVERITY[worst] ? status : worst), "passing");
}

/**
 * Consul already filtered with `?passing`, but the answer is checked again: a proxy cache or
 * a misbehaving server must not put a failing instance in service.
 */
export function isHealthy(worst: CheckStatus, policy: HealthPolicy): boolean {
  return policy === "passing" ? worst === "passing" : worst !== "critical";
}

export type WeightOutcome = { kind: "absent" } | { kind: "value"; value: unknown } | { kind: "invalid"; reason: string };

export function weightOf(service: { Meta?: Record<string, unknown> | null; Weights?: unknown }, worst: CheckStatus, source: WeightSource): WeightOutcome {
  if (source === "meta") {
    const text = service.Meta?.[WEIGHT_META_KEY];
    if (text === undefined) return { kind: "absent" };
    // Anything but digits goes through as it came, for toServers to refuse with the value shown.
    return { kind: "value", value: typeof text === "string" && /^[0-9]+$/.test(text) ? Number(text) : text };
  }
  const weights = weightsSchema.safeParse(service.Weights);
  if (!weights.success) {
    return { kind: "invalid", reason: `Service.Weights: ${weights.error.issues.map((issue) => `${issue.path.join(".") || "value"}: ${issue.message}`).join("; ")}` };
  }
  const value = worst === "warning" ? weights.data.Warning : weights.data.Passing;
  // Consul allows weights up to 65535 where HAProxy stops at 256: scaled per answer (scaleWeights).
  return { kind: "value", value };
}

/** `X-Consul-Index`: a uint64 in Consul; past 2^53 a JS number would compare wrongly. */
export function parseConsulIndex(header: string | string[] | undefined, service: string): number {
  if (header === undefined) throw new ConsulAnswerError(service, "no X-Consul-Index header");
  const text = Array.isArray(header) ? header.join(",") : header;
  if (!/^[0-9]{1,16}$/.test(text)) throw new ConsulAnswerError(service, `X-Consul-Index is not a number: ${preview(text)}`);
  const index = Number(text);
  if (!Number.isSafeInteger(index)) throw new ConsulAnswerError(service, `X-Consul-Index is too large: ${text}`);
  return index;
}

function taggedOf(addresses: unknown, name: string): unknown {
  return isRecord(addresses) ? addresses[name] : undefined;
}

function fallbackId(raw: Record<string, unknown>, position: number): string {
  const node = raw["Node"];
  const service = raw["Service"];
  const nodeName = isRecord(node) && typeof node["Node"] === "string" ? node["Node"] : null;
  const serviceId = isRecord(service) && typeof service["ID"] === "string" ? service["ID"] : null;
  if (nodeName !== null && serviceId !== null) return `${nodeName}/${serviceId}`;
  return `entry[${position}]`;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The start of a text, printable in one log line. */
export function preview(text: string, length = 200): string {
  const start = text.length > length ? `${text.slice(0, length)}...` : text;
  return JSON.stringify(start);
}
