import { z } from "zod";
import { weightSchema } from "../model/values.js";

/**
 * What hafleet itself did to servers: the admin state it set last, and the weight it applied.
 * Both hafleet and operators use the same `set server ... state` commands and HAProxy records
 * no author, so a DRAIN or MAINT that is not in this ledger (with the same endpoint) is taken
 * as an operator's and left alone; and a weight is changed only when the desired one differs
 * from the one recorded, so what HAProxy's agent-check or an operator set since stays.
 */
export const ledgerEntrySchema = z.strictObject({
  /** `ready`: hafleet placed the server there (or brought it back) and left it serving. */
  state: z.enum(["ready", "drain", "maint"]),
  endpoint: z.string().nullable(),
  /** When hafleet set the state (ms since epoch): drain deadlines count from here. */
  since: z.number(),
  /**
   * The desired weight hafleet last applied; null: the desired server had none, so the server
   * runs whatever weight it has. Absent: not known (a ledger written before weights were
   * recorded, or a server hafleet drained without having placed it).
   */
  weight: weightSchema.nullable().optional(),
});
export type LedgerEntry = z.infer<typeof ledgerEntrySchema>;

/** Keyed by `backend/server`. */
export type Ledger = ReadonlyMap<string, LedgerEntry>;

export const ledgerFileSchema = z.strictObject({
  socket: z.string(),
  entries: z.record(z.string(), ledgerEntrySchema),
});

export function ledgerKey(backend: string, server: string): string {
  return `${backend}/${server}`;
}
