/**
 * One base class, a stable `code` per failure, so that callers (the CLI, and later the
 * controller's nack) match on codes rather than on message text.
 */
export abstract class HafleetError extends Error {
  abstract readonly code: string;
}

export interface InputIssue {
  /** Where in the input, e.g. `backends[0].servers[2].port`. */
  path: string;
  message: string;
  /** The offending value as received, when there is one (a prefix when it was long: see `size`). */
  value?: unknown;
  /** Set when `value` was cut: how many characters the whole had. */
  size?: number;
}

/*
 * What came from outside is echoed in errors, logs and gRPC statuses as a bounded prefix with its
 * size, never whole: a 1 MB backend name in a hello made a 1 MB log line, and a status too big
 * to reach the client. Likewise at most ECHO_ISSUES issues are spelled out.
 */
const ECHO_CHARS = 256;
const ECHO_ISSUES = 10;

/** A long value is kept as its prefix and size, so that nothing logging the issues repeats it whole. */
function bounded(issue: InputIssue): InputIssue {
  if (issue.value === undefined) return issue;
  const text = typeof issue.value === "string" ? issue.value : (JSON.stringify(issue.value) ?? "");
  return text.length <= ECHO_CHARS ? issue : { ...issue, value: text.slice(0, ECHO_CHARS), size: text.length };
}

/** Input from outside (a file, a flag, a message) that failed validation: nothing was applied. */
export class InvalidInputError extends HafleetError {
  readonly code = "HAFLEET_INVALID_INPUT";
  readonly issues: InputIssue[];
  constructor(
    readonly source: string,
    issues: InputIssue[],
  ) {
    const kept = issues.map(bounded);
    const more = kept.length > ECHO_ISSUES ? `; and ${kept.length - ECHO_ISSUES} more` : "";
    super(`${cut(source)}: ${kept.slice(0, ECHO_ISSUES).map(formatIssue).join("; ")}${more}`);
    this.issues = kept;
    this.name = "InvalidInputError";
  }
}

function cut(text: string): string {
  return text.length <= ECHO_CHARS ? text : `${text.slice(0, ECHO_CHARS)}… (${text.length} characters)`;
}

function formatIssue(issue: InputIssue): string {
  const where = issue.path === "" ? "" : `${cut(issue.path)}: `;
  const size = issue.size === undefined ? "" : `… (${issue.size} characters)`;
  const value = issue.value === undefined ? "" : ` (got ${JSON.stringify(issue.value)}${size})`;
  return `${where}${issue.message}${value}`;
}

/** HAProxy answered something we cannot read; we never guess at partial output. */
export class ReplyParseError extends HafleetError {
  readonly code = "HAFLEET_BAD_REPLY";
  constructor(
    readonly command: string,
    detail: string,
  ) {
    super(`cannot parse HAProxy's reply to '${command}': ${detail}`);
    this.name = "ReplyParseError";
  }
}

export class ConnectError extends HafleetError {
  readonly code = "HAFLEET_CONNECT";
  constructor(
    readonly socket: string,
    detail: string,
  ) {
    super(`cannot connect to HAProxy at ${socket}: ${detail}`);
    this.name = "ConnectError";
  }
}

export class TimeoutError extends HafleetError {
  readonly code = "HAFLEET_TIMEOUT";
  constructor(
    readonly socket: string,
    what: string,
    readonly timeoutMs: number,
  ) {
    super(`${what} on ${socket} timed out after ${timeoutMs} ms`);
    this.name = "TimeoutError";
  }
}

/**
 * The connection ended before every reply of a batch came back. Commands after `answered`
 * may or may not have run, so they are never retried blindly: the caller re-reads and re-plans.
 */
export class ConnectionLostError extends HafleetError {
  readonly code = "HAFLEET_CONNECTION_LOST";
  constructor(
    readonly socket: string,
    readonly answered: number,
    readonly sent: number,
  ) {
    super(`connection to ${socket} lost after ${answered} of ${sent} replies`);
    this.name = "ConnectionLostError";
  }
}

/**
 * Every process that answered the admin socket was an old worker that is stopping (`Stopping: 1`):
 * after a reload it serves only the connections it had, so nothing may be read from or sent to it.
 */
export class StoppingWorkerError extends HafleetError {
  readonly code = "HAFLEET_STOPPING_WORKER";
  constructor(
    readonly socket: string,
    readonly pid: number,
  ) {
    super(`only an old, stopping HAProxy worker (pid ${pid}) answers ${socket}: the new worker does not answer yet`);
    this.name = "StoppingWorkerError";
  }
}

/** The command line itself is wrong (a missing flag, an unknown command). */
export class UsageError extends HafleetError {
  readonly code = "HAFLEET_USAGE";
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The controller's HTTP API could not be reached, or refused the request. */
export class ControllerApiError extends HafleetError {
  readonly code = "HAFLEET_CONTROLLER_API";
  constructor(
    readonly url: string,
    detail: string,
    /** The HTTP status, when the controller answered. */
    readonly status: number | null = null,
  ) {
    super(`controller API ${url}: ${detail}`);
    this.name = "ControllerApiError";
  }
}

/**
 * Something on this host stands in the way, not in the input: a port another process holds, a
 * folder that cannot be written. The CLI exits 3 with the message, which says what to do.
 */
export class EnvironmentError extends HafleetError {
  readonly code = "HAFLEET_ENVIRONMENT";
  constructor(message: string) {
    super(message);
    this.name = "EnvironmentError";
  }
}

/** Why a server could not listen on HOST:PORT, and what to do, from the listen error's code. */
export function listenFailure(address: string, error: unknown, setting: string): HafleetError {
  const code = (error as NodeJS.ErrnoException).code;
  const problems: Record<string, string> = {
    EADDRINUSE: `address already in use: another process listens there (see 'ss -ltnp'); stop it or choose another ${setting}`,
    EACCES: `permission denied: ports below 1024 need privileges; choose another ${setting}`,
    EADDRNOTAVAIL: `no interface of this host has that address; choose another ${setting}`,
  };
  const problem = (code === undefined ? undefined : problems[code]) ?? `${(error as Error).message}; check ${setting}`;
  return new EnvironmentError(`cannot listen on ${address}: ${problem}`);
}
