import { z } from "zod";
import { InvalidInputError } from "../../agent/errors.js";
import { issuesOf, parseWith } from "../../agent/model/validate.js";

/*
 * What the leadership key holds: who wrote it last as leader, and the data it published.
 * Read as untrusted input: anyone with key:write can put anything there.
 */

export const replicaSchema = z.strictObject({
  id: z.string().min(1, "must not be empty"),
  url: z.string().min(1, "must not be empty").optional(),
});
export type Replica = z.infer<typeof replicaSchema>;

const envelopeSchema = z.strictObject({
  leader: replicaSchema,
  data: z.unknown(),
});

export interface LeaderValue<T> {
  leader: Replica;
  data: T | null;
}

/** What the key's value says; `problem` names what was wrong when part of it is unusable. */
export interface ValueReading<T> {
  leader: Replica | null;
  data: T | null;
  problem: string | null;
}

export function encodeLeaderValue<T>(value: LeaderValue<T>): string {
  return JSON.stringify(value);
}

/**
 * `value` is the key's Value as Consul sends it (base64, or null when empty). A value that is
 * not ours reads as no leader and no data; data that fails its schema reads as no data, the
 * leader still known: a new leader then starts from nothing rather than from garbage.
 */
export function readLeaderValue<T>(value: string | null, dataSchema: z.ZodType<T>, key: string): ValueReading<T> {
  if (value === null) return { leader: null, data: null, problem: null };
  const source = `value of Consul key '${key}'`;
  const text = Buffer.from(value, "base64").toString("utf8");
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    return { leader: null, data: null, problem: `${source}: not valid JSON (${(error as Error).message}): ${JSON.stringify(text.slice(0, 200))}` };
  }
  const envelope = envelopeSchema.safeParse(parsed);
  if (!envelope.success) return { leader: null, data: null, problem: new InvalidInputError(source, issuesOf(envelope.error, parsed)).message };
  const { leader, data } = envelope.data;
  if (data === null) return { leader, data: null, problem: null };
  const checked = dataSchema.safeParse(data);
  if (!checked.success) return { leader, data: null, problem: new InvalidInputError(`${source}, field data`, issuesOf(checked.error, data)).message };
  return { leader, data: checked.data, problem: null };
}

/** Data about to be published, checked as the key's readers will check it. */
export function checkPublished<T>(data: T, dataSchema: z.ZodType<T>, key: string): T {
  return parseWith(dataSchema, data, `data published on Consul key '${key}'`);
}
