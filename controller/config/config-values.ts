import { isIP } from "node:net";
import { z } from "zod";
import { durationSchema as agentDurationSchema } from "../../agent/config/duration.js";
import { InvalidInputError } from "../../agent/errors.js";

/*
 * Value schemas shared by every config block (the controller's, its rollout block) and the
 * fleet commands: a leaf module, so that config modules can import it without a cycle.
 */

const LABEL_PATTERN = /^[A-Za-z0-9._-]{1,63}$/;
export const LABEL_MESSAGE = "must be 1 to 63 letters, digits, '.', '_' or '-'";

/** An agent label's name and value: the same rules as the labels an agent announces. */
export const labelKeySchema = z.string().regex(LABEL_PATTERN, LABEL_MESSAGE);
export const labelValueSchema = z.string({ error: "must be a string" }).regex(LABEL_PATTERN, LABEL_MESSAGE);

/** Milliseconds as a number, or the `--timeout`-style text `500ms`, `5s`, `2m`; at least 1 ms. */
export const durationSchema = agentDurationSchema(1);

/** For refinements, which run even when a field failed: compare only values that passed. */
export function isDuration(value: unknown): value is number {
  return durationSchema.safeParse(value).success;
}

const LISTEN_PATTERN = /^(?:\[(?<v6>[0-9A-Fa-f:.]+)\]|(?<host>[A-Za-z0-9.-]+)):(?<port>[0-9]{1,5})$/;
const LISTEN_MESSAGE = "must be HOST:PORT (IPv6 as [::1]:PORT) with a port in 0..65535";

function listenParts(text: string): { host: string; port: number } | null {
  const match = LISTEN_PATTERN.exec(text);
  const groups = match?.groups;
  if (groups === undefined) return null;
  const port = Number(groups.port);
  if (port > 65535) return null;
  if (groups.v6 !== undefined) return isIP(groups.v6) === 6 ? { host: groups.v6, port } : null;
  return groups.host === undefined ? null : { host: groups.host, port };
}

/**
 * `HOST:PORT` or `[v6]:PORT`; the host comes back without brackets, ready for `listen()`.
 * Port 0 passes: an ephemeral port is what tests and side-by-side runs want.
 */
export function parseListen(text: string): { host: string; port: number } {
  const parts = listenParts(text);
  if (parts === null) throw new InvalidInputError("listen", [{ path: "listen", message: LISTEN_MESSAGE, value: text }]);
  return parts;
}

export const listenSchema = z.string().refine((text) => listenParts(text) !== null, LISTEN_MESSAGE);
