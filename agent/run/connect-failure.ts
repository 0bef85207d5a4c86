import * as grpc from "@grpc/grpc-js";
import { connect, type Socket } from "node:net";
import { connect as tlsConnect, type SecureContext } from "node:tls";

/*
 * Why the agent's channel to a controller failed to connect, in words an operator can act on.
 * grpc-js shows only TRANSIENT_FAILURE on the channel; the cause (a refused port, a TLS alert,
 * a certificate check) is in the status details of a call made on that failed channel. When
 * those say too little ("Protocol error"), a raw probe of the address tells HTTP from TLS.
 */

/** The part of a fleet client a cause needs: a call that fails at once on a failed channel. */
export interface FailFastCall {
  on(event: "status", listener: (status: grpc.StatusObject) => void): unknown;
  on(event: "error", listener: (error: Error) => void): unknown;
  cancel(): void;
}

/** The cause in the status details of a call on a failed channel: `connect ECONNREFUSED 127.0.0.1:1`. */
export function lastErrorOf(details: string): string {
  const match = /Last error: (?:Error: )?([\s\S]*?)(?: \(\d{4}-\d\d-\d\dT[^)]*\))?\.?(?: Resolution note:[\s\S]*)?$/.exec(details);
  const cause = (match?.[1] ?? details).trim();
  return cause === "" ? details.trim() : cause;
}

const HINTS: Array<[RegExp, string]> = [
  [/ECONNREFUSED/, "nothing listens there: is the controller running, and is this its gRPC address (its `listen`)?"],
  [/ENOTFOUND|EAI_AGAIN/, "the host name does not resolve"],
  [/ETIMEDOUT|EHOSTUNREACH|ENETUNREACH/, "the host cannot be reached (a firewall, or a wrong address?)"],
  [/certificate required/i, "the controller requires a client certificate: give this agent tls (ca, cert, key)"],
  [/unknown ca|bad certificate|certificate unknown|decrypt error/i, "the controller refused this agent's certificate: it is not signed by the fleet CA the controller trusts"],
  [/certificate has expired|certificate revoked/i, "the controller refused this agent's certificate"],
  [/closed the connection after the TLS handshake/, "it most likely refused this agent's certificate: not signed by the fleet CA the controller trusts, or expired"],
  [/self[- ]signed certificate|unable to (?:verify|get local issuer)/i, "the controller's certificate is not signed by this agent's tls.ca (--tls-ca): use the fleet CA that issued it"],
  [/does not match certificate's altnames/i, "the controller's certificate does not name the host dialled: dial a name or IP in its SAN, or issue it with that --dns/--ip"],
  [/wrong version number|packet length too long|unexpected eof while reading|record layer failure/i, "the controller does not speak TLS there: give it tls as well, or drop this agent's tls for a loopback controller"],
];

/** The cause with what to do about it, when it is one we know. */
export function explainConnectFailure(raw: string): string {
  // OpenSSL's text carries its own source location: `...:SSL routines:ssl3_read_bytes:REASON:../deps/...`.
  const cause = /SSL routines:[^:]*:([^:]+)/.exec(raw)?.[1] ?? raw;
  const hint = HINTS.find(([pattern]) => pattern.test(cause))?.[1];
  return hint === undefined ? cause : `${cause}: ${hint}`;
}

/** Causes grpc-js words too vaguely to act on: the probe looks at what answers. */
const VAGUE = /^(?:Failed to connect|Protocol error|Connection dropped|Connection closed|socket hang up|read ECONNRESET|Stream refused by server|No connection established)/i;

/**
 * The TLS settings grpc-js made of `credentials` (createSsl keeps them as `secureContext`), for a
 * probe that fails as the channel did; undefined for plaintext, or if grpc-js stops keeping them.
 */
export function secureContextOf(credentials: grpc.ChannelCredentials): SecureContext | undefined {
  const context = (credentials as { secureContext?: unknown }).secureContext;
  return typeof context === "object" && context !== null && "context" in context ? (context as SecureContext) : undefined;
}

/**
 * The status a fail-fast call gets on the failed channel, as a cause to log. `secureContext`:
 * the agent's TLS settings (none: plaintext), for a TLS probe when the status says too little.
 */
export async function connectFailureCause(call: FailFastCall, address: string, secureContext: SecureContext | undefined, timeoutMs = 2_000): Promise<string> {
  const tls = secureContext !== undefined;
  const details = await new Promise<string>((resolve) => {
    const timer = setTimeout(() => resolve(""), timeoutMs);
    call.on("error", () => undefined);
    call.on("status", (status) => {
      clearTimeout(timer);
      resolve(status.details || grpc.status[status.code] || "");
    });
  });
  call.cancel();
  const cause = lastErrorOf(details);
  if (cause !== "" && !VAGUE.test(cause)) return explainConnectFailure(cause);
  if (tls) {
    const refused = await tlsProbe(address, secureContext, timeoutMs);
    if (refused !== null) return explainConnectFailure(refused);
  }
  const answer = await probeAnswer(address, timeoutMs);
  return answerCause(answer, tls) ?? explainConnectFailure(cause || "the connection failed");
}

/**
 * A TLS handshake as the channel makes it, kept open a moment: a server refusing the client's
 * certificate says so with an alert after the client finished (TLS 1.3), e.g. `tlsv13 alert
 * certificate required`. The error's message, or null when the handshake held.
 */
function tlsProbe(address: string, secureContext: SecureContext, timeoutMs: number): Promise<string | null> {
  const { host, port } = hostPort(address);
  return new Promise((resolve) => {
    const socket = tlsConnect({ host, port, secureContext, ALPNProtocols: ["h2"], ...(isIpLiteral(host) ? {} : { servername: host }) });
    const done = (cause: string | null): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(cause);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    socket.on("secureConnect", () => {
      socket.write(PREFACE + "\0\0\0\x04\0\0\0\0\0");
      // The server's verdict on our certificate comes with its first bytes, or as an alert.
      socket.once("data", () => done(null));
    });
    // The alert can come after the end of the stream: the error, if any, once it is closed.
    let failure: string | null = null;
    socket.on("error", (error: Error) => void (failure ??= error.message));
    socket.on("close", () => done(failure ?? "the controller closed the connection after the TLS handshake"));
  });
}

function isIpLiteral(host: string): boolean {
  return /^[0-9.]+$/.test(host) || host.includes(":");
}

function hostPort(address: string): { host: string; port: number } {
  const at = address.lastIndexOf(":");
  return { host: address.slice(0, at).replace(/^\[(.*)\]$/, "$1"), port: Number(address.slice(at + 1)) };
}

/** What a server says first to an HTTP/2 preface; "" when it closed without a word. */
export function answerCause(answer: Buffer | null, tls: boolean): string | null {
  if (answer === null) return null;
  if (answer.subarray(0, 5).toString("latin1") === "HTTP/") {
    const status = answer.toString("latin1").split("\r\n")[0];
    return `it answers ${JSON.stringify(status)}, an HTTP/1 server, not gRPC: is this the controller's HTTP port (http.listen) rather than its gRPC one (listen)?`;
  }
  // 0x15: a TLS alert record, what a TLS server answers to bytes that are not a handshake.
  if (!tls && (answer[0] === 0x15 || answer[0] === 0x16)) return "the controller speaks TLS there and this agent plaintext: give the agent tls (ca, cert, key)";
  if (!tls && answer.length === 0) return "the connection was closed at once: the controller may speak TLS there and this agent plaintext (give the agent tls), or it is not a controller";
  return null;
}

const PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/** Sends an HTTP/2 preface in clear and returns the first bytes of the reply, null if no connection. */
function probeAnswer(address: string, timeoutMs: number): Promise<Buffer | null> {
  const { host, port } = hostPort(address);
  return new Promise((resolve) => {
    let socket: Socket;
    let received = Buffer.alloc(0);
    const done = (answer: Buffer | null): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    const timer = setTimeout(() => done(received.length > 0 ? received : null), timeoutMs);
    socket = connect({ host, port }, () => socket.write(PREFACE + "\0\0\0\x04\0\0\0\0\0"));
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length >= 5) done(received.subarray(0, 256));
    });
    socket.on("end", () => done(received));
    socket.on("error", () => done(received.length > 0 ? received : socket.connecting ? null : received));
  });
}
