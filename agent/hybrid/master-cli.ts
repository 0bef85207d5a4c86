import { connect } from "node:net";
import type { Logger } from "pino";
import { ConnectError, ConnectionLostError, TimeoutError } from "../errors.js";
import { formatSocketAddress, type SocketAddress } from "../runtime/socket-address.js";
import { parseReloadReply, type ReloadReply } from "./reload-reply.js";
import { parseMasterStatus, parseShowProc, type MasterStatus, type ShowProc } from "./show-proc.js";

/**
 * Every text this client can write to the master CLI. The master can reload or stop HAProxy and
 * reach every worker (`@!pid ...`), so nothing from outside is ever part of a request: callers
 * choose one of these by name, and the names are checked again at run time.
 */
const REQUESTS = {
  "show proc": "show proc\n",
  // Interactive for this one exchange only: the reload status is visible in the prompt (2.6-3.4).
  "prompt show proc": "prompt\nshow proc\n",
  reload: "reload\n",
} as const;

export type MasterRequest = keyof typeof REQUESTS;

export interface MasterCliOptions {
  /** For one exchange, connect to close; `show proc` is a few hundred bytes. */
  timeoutMs?: number;
  logger?: Logger;
}

/**
 * The master CLI (`haproxy -W -S <socket>`), one connection per request, non-interactive:
 * the request is written with a half-close, and the reply is everything up to the master
 * closing. The half-close matters: the master keeps a non-interactive connection open until
 * the client shuts its write side (measured on 2.6), so a plain write would wait out the timeout.
 * Requests are rare (a reload, a few polls), so a kept-alive connection would buy nothing and
 * would die at every reload anyway, when the master re-executes itself.
 */
export class MasterCli {
  readonly name: string;
  private readonly timeoutMs: number;

  constructor(
    readonly address: SocketAddress,
    private readonly options: MasterCliOptions = {},
  ) {
    this.name = formatSocketAddress(address);
    this.timeoutMs = options.timeoutMs ?? 3_000;
  }

  /** The raw reply; a timeout or a broken connection is an error, never a short reply. */
  async request(request: MasterRequest, timeoutMs: number = this.timeoutMs): Promise<string> {
    if (!Object.hasOwn(REQUESTS, request)) throw new Error(`refusing to send an unknown master CLI request: ${JSON.stringify(request)}`);
    const reply = await exchange(this.address, this.name, REQUESTS[request], request, timeoutMs);
    this.options.logger?.trace({ socket: this.name, request, bytes: reply.length }, "master CLI replied");
    return reply;
  }

  async showProc(): Promise<ShowProc> {
    return parseShowProc(await this.request("show proc"));
  }

  /** `show proc` and the prompt, read on one connection so that both describe the same moment. */
  async status(): Promise<MasterStatus> {
    return parseMasterStatus(await this.request("prompt show proc"));
  }

  /**
   * Asks the master to reload, and returns its verdict when the version gives one (2.7+, see
   * reload-reply.ts); 2.6 answers nothing either way, and later `show proc` replies tell (see
   * reloader.ts). Any other text is a refusal (not a master socket, or too low a level): a
   * ReplyParseError, and nothing was reloaded. 2.7+ answers only once the new worker has loaded,
   * which takes longer than other requests on a large config: hence a timeout of its own.
   */
  async reload(timeoutMs: number = this.timeoutMs): Promise<ReloadReply> {
    return parseReloadReply(await this.request("reload", timeoutMs));
  }
}

function exchange(address: SocketAddress, name: string, payload: string, what: string, timeoutMs: number): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const socket = address.kind === "unix" ? connect({ path: address.path }) : connect({ host: address.host, port: address.port });
    const chunks: Buffer[] = [];
    let connected = false;
    let settled = false;
    const settle = (error: Error | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (error) reject(error);
      else resolve(Buffer.concat(chunks).toString("utf8"));
    };
    const timer = setTimeout(() => settle(new TimeoutError(name, `master CLI '${what}'`, timeoutMs)), timeoutMs);
    socket.on("connect", () => {
      connected = true;
      socket.end(payload);
    });
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    // The master closing its side is the end of the reply: non-interactive mode has no other.
    socket.on("end", () => settle(null));
    socket.on("error", (error) => settle(connected ? new ConnectionLostError(name, 0, 1) : new ConnectError(name, error.message)));
    // A close with neither 'end' nor 'error' would otherwise leave the caller to the timeout.
    socket.on("close", () => settle(connected ? new ConnectionLostError(name, 0, 1) : new ConnectError(name, "closed before connecting")));
  });
}
