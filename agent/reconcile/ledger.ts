import { z } from "zod";

/**
 * What hafleet itself did to servers' admin states. Both hafleet and operators use the same
 * `set server ... state` commands and HAProxy records no author, so a DRAIN or MAINT that is
 * not in this ledger (with the same endpoint) is taken as an operator's and left alone.
 */
export const ledgerEntrySchema = z.strictObject({
  state: z.enum(["drain", "maint"]),
  endpoint: z.string().nullable(),
  /** When hafleet set the state (ms since epoch): drain deadlines count from here. */
  since: z.number(),
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
