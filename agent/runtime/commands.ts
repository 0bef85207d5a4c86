import { endpointKey, type Address, type Name, type Port, type Weight } from "../model/values.js";

/**
 * Runtime API commands, built only here and only from validated (branded) values.
 * The constructor is private, so no other module can turn a string into a command.
 */
export type CommandKind =
  | "set-addr"
  | "set-weight"
  | "set-state"
  | "add-server"
  | "del-server"
  | "enable-health"
  | "wait-removable"
  | "show-servers-state"
  | "show-stat"
  | "show-info"
  | "show-backend";

/** Each kind's Runtime API command without its arguments: a bounded set, fit for a metric label. */
const VERBS = {
  "set-addr": "set server",
  "set-weight": "set server",
  "set-state": "set server",
  "add-server": "add server",
  "del-server": "del server",
  "enable-health": "enable health",
  "wait-removable": "wait",
  "show-servers-state": "show servers state",
  "show-stat": "show stat",
  "show-info": "show info",
  "show-backend": "show backend",
} as const satisfies Record<CommandKind, string>;
export type CommandVerb = (typeof VERBS)[CommandKind];

export type AdminTarget = "ready" | "drain" | "maint";

export class RuntimeCommand {
  private constructor(
    readonly kind: CommandKind,
    readonly text: string,
  ) {}

  /** Read-only commands may be retried on a fresh connection; changes never are. */
  get isRead(): boolean {
    return this.kind.startsWith("show-");
  }

  get verb(): CommandVerb {
    return VERBS[this.kind];
  }

  static setAddress(backend: Name, server: Name, address: Address, port: Port): RuntimeCommand {
    return new RuntimeCommand("set-addr", `set server ${target(backend, server)} addr ${addressArg(address)} port ${integerArg(port, 1, 65535)}`);
  }

  static setWeight(backend: Name, server: Name, weight: Weight): RuntimeCommand {
    return new RuntimeCommand("set-weight", `set server ${target(backend, server)} weight ${integerArg(weight, 0, 256)}`);
  }

  static setState(backend: Name, server: Name, state: AdminTarget): RuntimeCommand {
    if (!ADMIN_TARGETS.has(state)) unsafe("state", state);
    return new RuntimeCommand("set-state", `set server ${target(backend, server)} state ${state}`);
  }

  /** Added in maintenance (HAProxy's default), so that it takes traffic only once fully set up. */
  static addServer(backend: Name, server: Name, address: Address, port: Port, options: { weight?: Weight; check: boolean }): RuntimeCommand {
    const endpoint = endpointKey(addressArg(address) as Address, integerArg(port, 1, 65535) as Port);
    const weight = options.weight === undefined ? "" : ` weight ${integerArg(options.weight, 0, 256)}`;
    const check = options.check ? " check" : "";
    return new RuntimeCommand("add-server", `add server ${target(backend, server)} ${endpoint}${weight}${check}`);
  }

  static deleteServer(backend: Name, server: Name): RuntimeCommand {
    return new RuntimeCommand("del-server", `del server ${target(backend, server)}`);
  }

  /**
   * HAProxy 3.0+: returns once the server may be deleted (in maintenance, no connection left),
   * or after `ms`: a removal then follows the server's last connection, not a timer.
   */
  static waitRemovable(backend: Name, server: Name, ms: number): RuntimeCommand {
    return new RuntimeCommand("wait-removable", `wait ${integerArg(ms, 1, 60_000)} srv-removable ${target(backend, server)}`);
  }

  static enableHealth(backend: Name, server: Name): RuntimeCommand {
    return new RuntimeCommand("enable-health", `enable health ${target(backend, server)}`);
  }

  static showServersState(): RuntimeCommand {
    return new RuntimeCommand("show-servers-state", "show servers state");
  }

  /** Backends (type 2), with servers (4) too when asked: frontends are of no use here. */
  static showStat(scope: "backends" | "backends-and-servers"): RuntimeCommand {
    return new RuntimeCommand("show-stat", `show stat -1 ${scope === "backends" ? 2 : 6} -1`);
  }

  /** One server's statistics, by the proxy and server ids of `show servers state`. */
  static showServerStat(backendId: number, serverId: number): RuntimeCommand {
    return new RuntimeCommand("show-stat", `show stat ${integerArg(backendId, 1, 2 ** 31)} 4 ${integerArg(serverId, 1, 2 ** 31)}`);
  }

  static showInfo(): RuntimeCommand {
    return new RuntimeCommand("show-info", "show info");
  }

  static showBackend(): RuntimeCommand {
    return new RuntimeCommand("show-backend", "show backend");
  }
}

/*
 * Last line of defence, argument by argument: the branded types already guarantee these, but
 * a value that could add an argument or run a second command must never be written, whatever
 * a future caller casts. Checked per value, since a space is harmless only between arguments.
 */
const NAME_ARG = /^[A-Za-z0-9._-]{1,64}$/;
const ADDRESS_ARG = /^[0-9A-Fa-f:.]{2,45}$/;
const ADMIN_TARGETS = new Set<string>(["ready", "drain", "maint"]);

function target(backend: Name, server: Name): string {
  if (!NAME_ARG.test(backend)) unsafe("backend name", backend);
  if (!NAME_ARG.test(server)) unsafe("server name", server);
  return `${backend}/${server}`;
}

function addressArg(address: Address): string {
  if (!ADDRESS_ARG.test(address)) unsafe("address", address);
  return address;
}

function integerArg(value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) unsafe(`integer in ${min}..${max}`, value);
  return value;
}

function unsafe(what: string, value: unknown): never {
  throw new Error(`refusing to build a Runtime API command with an unsafe ${what}: ${JSON.stringify(value)}`);
}
