import { resolve } from "node:path";
import type { Logger } from "pino";
import { HafleetError, ReplyParseError } from "../errors.js";
import { writeFileAtomic } from "../files/write-file-atomic.js";
import { RuntimeCommand } from "../runtime/commands.js";
import { parseServersState } from "../runtime/parsers/servers-state.js";
import type { CommandRunner } from "../runtime/runtime-client.js";

export interface SavedServerState {
  path: string;
  servers: number;
  bytes: number;
}

/** The state was read but the file could not be written (permissions, disk): the old file stays. */
export class StateFileWriteError extends HafleetError {
  readonly code = "HAFLEET_STATE_FILE_WRITE";
  constructor(
    readonly path: string,
    detail: string,
  ) {
    super(`cannot write the server-state file ${path}: ${detail}`);
    this.name = "StateFileWriteError";
  }
}

/*
 * Not secret (backend and server names, addresses: what the config holds too), and HAProxy's
 * master may read it as another user than the agent's.
 */
const FILE_MODE = 0o644;

/** A RuntimeClient, or any runner of `show servers state` (tests pass fakes). */
export type StateSource = CommandRunner & { readonly name?: string };

/** Saves per path run one after another: two at once would share a temp file name. */
const saving = new Map<string, Promise<unknown>>();

/**
 * Writes what HAProxy runs now (`show servers state`, through the admin socket) to the
 * server-state file that HAProxy loads on its next reload; HAProxy never writes it itself.
 * The reply must parse completely before anything is written, so a garbled or cut reply never
 * replaces a good file; the write is atomic, so a crash leaves the old file or the new one.
 */
export function saveServerState(client: StateSource, path: string, options: { logger?: Logger } = {}): Promise<SavedServerState> {
  const key = resolve(path);
  const previous = saving.get(key) ?? Promise.resolve();
  const next = previous.then(ignore, ignore).then(() => saveNow(client, path, options.logger));
  saving.set(key, next);
  void next.then(ignore, ignore).then(() => {
    if (saving.get(key) === next) saving.delete(key);
  });
  return next;
}

async function saveNow(client: StateSource, path: string, logger: Logger | undefined): Promise<SavedServerState> {
  const [reply] = await client.run([RuntimeCommand.showServersState()]);
  if (reply === undefined) throw new ReplyParseError("show servers state", "no reply");
  const servers = parseServersState(reply.text).length;
  // The framer strips the reply's trailing newlines; the file is the reply as HAProxy printed it.
  const text = `${reply.text}\n`;
  try {
    await writeFileAtomic(path, text, FILE_MODE);
  } catch (error) {
    throw new StateFileWriteError(path, (error as Error).message);
  }
  logger?.info({ socket: client.name, path, servers }, "server-state file written");
  return { path, servers, bytes: Buffer.byteLength(text) };
}

function ignore(): void {}
