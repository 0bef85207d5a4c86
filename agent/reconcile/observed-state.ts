import { asName, asObservedAddress, asPort, type Address, type Name, type Port } from "../model/values.js";
import type { ServerStateRow } from "../runtime/parsers/servers-state.js";
import type { StatRow } from "../runtime/parsers/stat-csv.js";

/** HAProxy 2.6 `srv_admin_state` bits (include/haproxy/server-t.h). */
const ADMIN_FORCED_MAINT = 0x01;
const ADMIN_INHERITED_MAINT = 0x02;
/** SRV_ADMF_CMAINT: the config line says `disabled`. Not part of SRV_ADMF_MAINT (0x23). */
const ADMIN_CONFIG_MAINT = 0x04;
const ADMIN_FORCED_DRAIN = 0x08;
const ADMIN_INHERITED_DRAIN = 0x10;
const ADMIN_RESOLUTION_MAINT = 0x20;
const ADMIN_HOSTNAME_MAINT = 0x40;
const ANY_MAINT = ADMIN_FORCED_MAINT | ADMIN_INHERITED_MAINT | ADMIN_RESOLUTION_MAINT | ADMIN_HOSTNAME_MAINT;
const ANY_DRAIN = ADMIN_FORCED_DRAIN | ADMIN_INHERITED_DRAIN;

/** `srv_check_state` bit: a health check is configured on the server. */
const CHECK_CONFIGURED = 0x02;

/** The name prefix of servers hafleet adds with `add server`: only those does it delete. */
export const DYNAMIC_PREFIX = "hafleet-";

export type AdminMode = "ready" | "drain" | "maint";

export interface ObservedServer {
  /** The raw name; `name` is set only when it may be used in a command. */
  rawName: string;
  name: Name | null;
  id: number;
  /** As HAProxy printed it; `address` is set only for a usable (non-placeholder) literal, in hafleet's canonical form. */
  rawAddress: string;
  address: Address | null;
  port: Port | null;
  admin: AdminMode;
  adminBits: number;
  userWeight: number;
  initialWeight: number;
  checked: boolean;
  /** Added by hafleet at runtime (and so deleted by it when no longer needed). */
  dynamic: boolean;
  /** `show stat` status (UP, DOWN, MAINT, DRAIN, `no check`...); null when not read. */
  status: string | null;
  /** Current sessions; null when not read (only draining servers' are, when planning). */
  sessions: number | null;
}

export interface ObservedBackend {
  rawName: string;
  name: Name | null;
  algorithm: string | null;
  servers: ObservedServer[];
}

export type ObservedState = ReadonlyMap<string, ObservedBackend>;

/** Joins `show servers state` (authoritative for config) with `show stat` (traffic, status). */
export function buildObservedState(backendNames: readonly string[], servers: readonly ServerStateRow[], stats: readonly StatRow[]): ObservedState {
  const statByServer = new Map<string, StatRow>();
  const algorithmByBackend = new Map<string, string | null>();
  for (const row of stats) {
    if (row.service === "BACKEND") algorithmByBackend.set(row.proxy, row.algorithm);
    else statByServer.set(`${row.proxy}/${row.service}`, row);
  }
  const backends = new Map<string, ObservedBackend>();
  for (const rawName of backendNames) {
    backends.set(rawName, { rawName, name: asName(rawName), algorithm: algorithmByBackend.get(rawName) ?? null, servers: [] });
  }
  for (const row of servers) {
    const backend = backends.get(row.backend);
    if (!backend) continue;
    const stat = statByServer.get(`${row.backend}/${row.server}`);
    backend.servers.push(observedServer(row, stat));
  }
  return backends;
}

function observedServer(row: ServerStateRow, stat: StatRow | undefined): ObservedServer {
  return {
    rawName: row.server,
    name: asName(row.server),
    id: row.serverId,
    rawAddress: row.address,
    address: asObservedAddress(row.address),
    port: row.port === null ? null : asPort(row.port),
    admin: adminMode(row.adminState),
    adminBits: row.adminState,
    userWeight: row.userWeight,
    initialWeight: row.initialWeight,
    checked: (row.checkState & CHECK_CONFIGURED) !== 0,
    dynamic: row.server.startsWith(DYNAMIC_PREFIX),
    status: stat?.status ?? null,
    sessions: stat?.currentSessions ?? null,
  };
}

/**
 * Declared `disabled` in the config, as template slots are. HAProxy keeps the bit whatever the
 * runtime state (a disabled slot shows 5, after `state ready` 4, in drain 12), and a reload
 * starts the server with it again; `add server` never sets it without the `disabled` keyword.
 */
export function isDisabledInConfig(server: ObservedServer): boolean {
  return (server.adminBits & ADMIN_CONFIG_MAINT) !== 0;
}

export function adminMode(bits: number): AdminMode {
  if (bits & ANY_MAINT) return "maint";
  if (bits & ANY_DRAIN) return "drain";
  return "ready";
}
