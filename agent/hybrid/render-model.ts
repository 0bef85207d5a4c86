import { isIP } from "node:net";
import { InvalidInputError, type InputIssue } from "../errors.js";
import type { DesiredServer, DesiredState } from "../model/desired-state.js";
import { nameSchema } from "../model/values.js";
import type { ObservedBackend, ObservedServer, ObservedState } from "../reconcile/observed-state.js";

/**
 * The data a haproxy.cfg template is rendered with. Pure: no I/O, no clock, so the same
 * state gives the same context, and so the same bytes on disk (a write that changes nothing
 * is skipped, and a reload is never caused by a reordering).
 *
 * Template context (variables given with `--var` sit next to `backends`):
 *   backends[]            sorted by name
 *     .name               backend name
 *     .balance            the running algorithm when a bare `balance X` line reproduces it
 *                         (roundrobin, static-rr, leastconn, first, source), else "": the
 *                         template then chooses (hash algorithms carry arguments HAProxy
 *                         does not report, and a desired state has no algorithm)
 *     .servers[]          in the order HAProxy runs them (server id), spare slots last
 *       .name             `srvN` slots, `hafleet-...` servers hafleet added at runtime
 *       .address          IP literal; PLACEHOLDER_ADDRESS for a slot without one
 *       .port             1..65535
 *       .endpoint         `address:port`, IPv6 in brackets: what a `server` line takes
 *       .weight           0..256, the weight it runs with
 *       .disabled         true: write `disabled` (maintenance, or no usable address)
 *
 * A drain cannot be written in a config line (`disabled` is maintenance): a draining server
 * renders enabled, and only the server-state file carries its drain across a reload.
 */

export interface RenderServer {
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly endpoint: string;
  readonly weight: number;
  readonly disabled: boolean;
}

export interface RenderBackend {
  readonly name: string;
  readonly balance: RenderBalance;
  readonly servers: readonly RenderServer[];
}

export interface RenderContext {
  readonly backends: readonly RenderBackend[];
}

/** Algorithms whose name alone, as `show stat` reports it, is a complete `balance` line. */
export const RENDERABLE_BALANCE = ["roundrobin", "static-rr", "leastconn", "first", "source"] as const;
export type RenderBalance = (typeof RENDERABLE_BALANCE)[number] | "";

/** What template slots are configured with: never contacted, since such a slot is disabled. */
export const PLACEHOLDER_ADDRESS = "0.0.0.0";
export const PLACEHOLDER_PORT = 80;
/** HAProxy's own default when a server line has no `weight`. */
export const HAPROXY_DEFAULT_WEIGHT = 1;
export const DEFAULT_SLOT_PREFIX = "srv";
/** More would be a typo, and each slot is a server HAProxy allocates. */
export const MAX_SPARE_SLOTS = 10_000;

/**
 * HAProxy's own set for proxy and server names (`invalid_char`): everything it runs matches,
 * and none of it can end a config line, start a comment or add an argument.
 */
const CONFIG_NAME = /^[A-Za-z0-9._:-]+$/;

export interface FromObservedOptions {
  /** Only these backends (the ones hafleet manages); default: every backend HAProxy runs. Names HAProxy does not run are skipped. */
  backends?: Iterable<string>;
  /** At least this many free (disabled, non-dynamic) slots per backend after rendering. */
  spareSlots: number;
  /** For a backend with no numbered slot to continue (default "srv"). */
  slotPrefix?: string;
  /** Spare slots' weight where the backend has no configured server to copy it from. */
  defaultWeight?: number;
}

/** The running mode: what HAProxy runs now, so that a reload from the file changes nothing. */
export function fromObserved(observed: ObservedState, options: FromObservedOptions): RenderContext {
  const spareSlots = checkSpareSlots(options.spareSlots);
  const prefix = checkSlotPrefix(options.slotPrefix ?? DEFAULT_SLOT_PREFIX);
  const defaultWeight = checkWeight(options.defaultWeight ?? HAPROXY_DEFAULT_WEIGHT, "defaultWeight");
  const wanted = options.backends === undefined ? null : new Set(options.backends);
  const issues: InputIssue[] = [];
  const backends: RenderBackend[] = [];
  for (const backend of observed.values()) {
    if (wanted !== null && !wanted.has(backend.rawName)) continue;
    const rendered = renderObservedBackend(backend, { spareSlots, prefix, defaultWeight }, issues);
    if (rendered) backends.push(rendered);
  }
  // A server left out would be gone after the next reload: refuse rather than render less.
  if (issues.length > 0) throw new InvalidInputError("running HAProxy", issues);
  return { backends: backends.sort((a, b) => compareText(a.name, b.name)) };
}

interface SpareRule {
  spareSlots: number;
  prefix: string;
  defaultWeight: number;
}

function renderObservedBackend(backend: ObservedBackend, rule: SpareRule, issues: InputIssue[]): RenderBackend | null {
  if (!CONFIG_NAME.test(backend.rawName)) {
    issues.push({ path: `backend ${JSON.stringify(backend.rawName)}`, message: "name cannot be written in a config file" });
    return null;
  }
  const running = [...backend.servers].sort((a, b) => a.id - b.id || compareText(a.rawName, b.rawName));
  const servers: RenderServer[] = [];
  let free = 0;
  for (const server of running) {
    const rendered = renderObservedServer(backend.rawName, server, issues);
    if (!rendered) continue;
    servers.push(rendered);
    if (!server.dynamic && rendered.disabled) free++;
  }
  const slots = running.filter((server) => !server.dynamic);
  // An empty slot still has the weight its line was written with; a filled one, once reloaded
  // from a render, has its runtime weight as configured weight, and would move the spares'.
  const model = slots.find((server) => server.address === null) ?? slots[0];
  const spareWeight = model !== undefined && isWeight(model.initialWeight) ? model.initialWeight : rule.defaultWeight;
  // Only names hafleet can use in a command are continued: a spare it cannot fill is no spare.
  const prefix = slotPrefixOf(slots.flatMap((server) => (server.name === null ? [] : [server.name]))) ?? rule.prefix;
  const names = nextSlotNames(
    running.map((server) => server.rawName),
    prefix,
    Math.max(0, rule.spareSlots - free),
  );
  servers.push(...spares(names, spareWeight));
  return { name: backend.rawName, balance: renderableBalance(backend.algorithm), servers };
}

function renderObservedServer(backend: string, server: ObservedServer, issues: InputIssue[]): RenderServer | null {
  const where = `${backend}/${server.rawName}`;
  if (!CONFIG_NAME.test(server.rawName)) {
    issues.push({ path: where, message: "server name cannot be written in a config file" });
    return null;
  }
  if (!isWeight(server.userWeight)) {
    issues.push({ path: where, message: "weight is not an integer in 0..256", value: server.userWeight });
    return null;
  }
  // Placeholder slots (0.0.0.0), FQDN-only servers and port 0 have nothing a line could hold.
  if (server.address === null || server.port === null) return placeholder(server.rawName, server.userWeight);
  return serverEntry(server.rawName, server.address, server.port, server.userWeight, server.admin === "maint");
}

export interface FromDesiredOptions {
  /** Servers are `<slotPrefix>1..N`, spare slots continue the numbering (default "srv"). */
  slotPrefix?: string;
  spareSlots: number;
  /** For servers without a desired weight (default 1, as HAProxy). */
  defaultWeight?: number;
}

/**
 * The standalone form (`hafleet-agent render`, no HAProxy to ask): every desired server in
 * a slot numbered by endpoint order, then spare slots to grow into without a reload.
 */
export function fromDesired(desired: DesiredState, options: FromDesiredOptions): RenderContext {
  const spareSlots = checkSpareSlots(options.spareSlots);
  const prefix = checkSlotPrefix(options.slotPrefix ?? DEFAULT_SLOT_PREFIX);
  const defaultWeight = checkWeight(options.defaultWeight ?? HAPROXY_DEFAULT_WEIGHT, "defaultWeight");
  const backends = desired.backends.map((backend): RenderBackend => {
    const sorted = [...backend.servers].sort(compareDesiredServers);
    const servers = sorted.map((server, index) => serverEntry(`${prefix}${index + 1}`, server.address, server.port, server.weight ?? defaultWeight, false));
    const spareNames = Array.from({ length: spareSlots }, (_, index) => `${prefix}${sorted.length + index + 1}`);
    return { name: backend.name, balance: "", servers: [...servers, ...spares(spareNames, defaultWeight)] };
  });
  return { backends: backends.sort((a, b) => compareText(a.name, b.name)) };
}

function serverEntry(name: string, address: string, port: number, weight: number, disabled: boolean): RenderServer {
  return { name, address, port, endpoint: formatEndpoint(address, port), weight, disabled };
}

function placeholder(name: string, weight: number): RenderServer {
  return serverEntry(name, PLACEHOLDER_ADDRESS, PLACEHOLDER_PORT, weight, true);
}

function spares(names: readonly string[], weight: number): RenderServer[] {
  return names.map((name) => placeholder(name, weight));
}

export function formatEndpoint(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

const NUMBERED = /^(.*\D)(\d+)$/;

/** The prefix of the first numbered slot (`srv` of `srv3`), so spares continue its series. */
export function slotPrefixOf(slotNames: readonly string[]): string | null {
  for (const name of slotNames) {
    const match = NUMBERED.exec(name);
    if (match) return match[1]!;
  }
  return null;
}

/**
 * `count` names `<prefix>K` numbered after the highest K in use, skipping any name taken,
 * so a spare never clashes with a slot, a dynamic server or another spare.
 */
export function nextSlotNames(taken: readonly string[], prefix: string, count: number): string[] {
  const used = new Set(taken);
  let highest = 0;
  for (const name of taken) {
    const match = NUMBERED.exec(name);
    if (match && match[1] === prefix) highest = Math.max(highest, Number(match[2]));
  }
  const names: string[] = [];
  for (let number = highest + 1; names.length < count; number++) {
    const name = `${prefix}${number}`;
    if (!used.has(name)) names.push(name);
  }
  return names;
}

function renderableBalance(algorithm: string | null): RenderBalance {
  return (RENDERABLE_BALANCE as readonly string[]).includes(algorithm ?? "") ? (algorithm as RenderBalance) : "";
}

/** Numeric address order (v4 before v6), then port: stable, and readable in the file. */
export function compareDesiredServers(a: DesiredServer, b: DesiredServer): number {
  return compareText(addressSortKey(a.address), addressSortKey(b.address)) || a.port - b.port;
}

/** A fixed-width form whose text order is the numeric order of the address. */
export function addressSortKey(address: string): string {
  if (isIP(address) === 4) return `4:${address.split(".").map((octet) => octet.padStart(3, "0")).join(".")}`;
  return `6:${expandIpv6(address)}`;
}

function expandIpv6(address: string): string {
  let text = address.toLowerCase();
  // An embedded IPv4 tail (`::10.0.0.1`, as inet_ntop prints IPv4-compatible addresses) becomes its two hex groups.
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = "", tail] = text.split("::");
  const headGroups = head === "" ? [] : head.split(":");
  const tailGroups = tail === undefined || tail === "" ? [] : tail.split(":");
  const zeros = Array.from({ length: 8 - headGroups.length - tailGroups.length }, () => "0");
  return [...headGroups, ...(tail === undefined ? [] : zeros), ...tailGroups].map((group) => group.padStart(4, "0")).join(":");
}

/** Code-point order, never the locale's: the same bytes on every machine. */
function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function isWeight(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= 256;
}

function checkWeight(value: number, what: string): number {
  if (!isWeight(value)) throw new RangeError(`${what} must be an integer in 0..256, got ${value}`);
  return value;
}

function checkSpareSlots(value: number): number {
  if (!Number.isInteger(value) || value < 0 || value > MAX_SPARE_SLOTS) {
    throw new RangeError(`spareSlots must be an integer in 0..${MAX_SPARE_SLOTS}, got ${value}`);
  }
  return value;
}

function checkSlotPrefix(prefix: string): string {
  // Digits at the end would run into the slot number (`srv1` + 1 = `srv11`).
  if (!nameSchema.safeParse(prefix).success || /\d$/.test(prefix)) {
    throw new RangeError(`slotPrefix must be a name not ending in a digit, got ${JSON.stringify(prefix)}`);
  }
  return prefix;
}
