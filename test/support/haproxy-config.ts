/**
 * Config text for the HAProxy instances that tests and the benchmark start. Pure string
 * builders, so what a test runs against can be read (and unit-tested) without a process.
 */

export interface TemplateBackendOptions {
  slots: number;
  /** Server name prefix: slots are named `<prefix>1..<prefix>N` (default "srv"). */
  prefix?: string;
  /** Default roundrobin: dynamic, so `add server` also works on the backend. */
  balance?: string;
  check?: boolean;
  weight?: number;
}

/**
 * A backend with N disabled `server-template` slots. The placeholder address is never
 * contacted: the slots start in maintenance and tests only move them through the Runtime API.
 */
export function templateBackend(name: string, options: TemplateBackendOptions): string {
  const { slots, prefix = "srv", balance = "roundrobin", check = false, weight } = options;
  if (!Number.isInteger(slots) || slots < 1) {
    throw new RangeError(`templateBackend(${name}): slots must be an integer >= 1, got ${slots}`);
  }
  const server = [`server-template ${prefix} 1-${slots} 0.0.0.0:80 disabled`];
  if (check) server.push("check");
  if (weight !== undefined) server.push(`weight ${weight}`);
  return [`backend ${name}`, `    balance ${balance}`, `    ${server.join(" ")}`, ""].join("\n");
}

/** `be_0 .. be_<backends-1>`, each with `slotsPerBackend` template slots `srv1..srvN`. */
export function benchmarkSections(backends: number, slotsPerBackend: number): string {
  const sections: string[] = [];
  for (let index = 0; index < backends; index += 1) {
    sections.push(templateBackend(`be_${index}`, { slots: slotsPerBackend }));
  }
  return sections.join("\n");
}

export interface InstanceConfigOptions {
  adminSocket: string;
  sections: string;
  quiet?: boolean;
  /** `127.0.0.1:PORT` for a second admin socket on TCP. */
  tcpSocket?: string | null;
  /** Emit a frontend on 127.0.0.1:<port> sending to this backend; both or neither. */
  frontend?: { port: number; defaultBackend: string };
  /** Appended to the global section as given (e.g. `    server-state-file /path`). */
  globalExtra?: string;
}

/** The whole config file of a test instance: global, defaults, optional frontend, sections. */
export function instanceConfig(options: InstanceConfigOptions): string {
  const lines = [
    "global",
    // expose-fd: a handover reload (`-x SOCKET -sf PID`) takes the listeners from the old process.
    `    stats socket ${options.adminSocket} mode 600 level admin expose-fd listeners`,
    ...(options.tcpSocket ? [`    stats socket ipv4@${options.tcpSocket} level admin`] : []),
    // Long enough for a debugging pause, short enough not to pin idle test connections forever.
    "    stats timeout 2m",
    // Two cores run the tests, the product and several HAProxy instances at once.
    "    nbthread 1",
    // A fixed, modest limit so startup never depends on this machine's file-descriptor ulimit.
    "    maxconn 1000",
    ...(options.quiet ? ["    quiet"] : []),
    ...(options.globalExtra ? [options.globalExtra.trimEnd()] : []),
    "",
    "defaults",
    "    mode http",
    "    timeout connect 1s",
    "    timeout client 5s",
    "    timeout server 5s",
    "",
  ];
  if (options.frontend) {
    lines.push(
      "frontend fe_test",
      `    bind 127.0.0.1:${options.frontend.port}`,
      `    default_backend ${options.frontend.defaultBackend}`,
      "",
    );
  }
  lines.push(options.sections.trimEnd(), "");
  return lines.join("\n");
}
