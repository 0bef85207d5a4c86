import { appendFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { z } from "zod";

/*
 * Every operator action taken through the API: what, when, from where, and by which token (the
 * operator's; a read token takes none). Appended to `<stateDir>/audit.jsonl`, one JSON object a
 * line, so that it survives restarts and `tail`/`jq` read it; the newest are kept in memory for
 * `GET /api/v1/audit`. Without a state dir it is kept in memory only, and the log says so.
 */

export const auditEntrySchema = z.object({
  at: z.number(),
  action: z.string(),
  /** Which credential: only the operator token may act. */
  by: z.literal("operator-token"),
  /** The client's address as the controller saw it. */
  from: z.string(),
  /** The request's own fields (a freeze's reason, an agent id), bounded. */
  detail: z.record(z.string(), z.string()),
  outcome: z.enum(["done", "refused"]),
  error: z.string().optional(),
});
export type AuditEntry = z.infer<typeof auditEntrySchema>;

const KEPT = 200;
const DETAIL_CHARS = 512;

export class AuditLog {
  private readonly recent: AuditEntry[] = [];
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly stateDir: string | undefined,
    private readonly logger: Logger,
  ) {}

  get path(): string | null {
    return this.stateDir === undefined ? null : join(this.stateDir, "audit.jsonl");
  }

  /** Kept at once; written in order, a failed write logged (the action itself already happened). */
  record(entry: AuditEntry): Promise<void> {
    const bounded = { ...entry, detail: Object.fromEntries(Object.entries(entry.detail).map(([key, value]) => [key, value.slice(0, DETAIL_CHARS)])) };
    this.recent.push(bounded);
    if (this.recent.length > KEPT) this.recent.splice(0, this.recent.length - KEPT);
    this.logger.warn({ audit: bounded }, "operator action");
    const path = this.path;
    if (path === null || this.stateDir === undefined) return Promise.resolve();
    const dir = this.stateDir;
    this.writing = this.writing
      .then(() => mkdir(dir, { recursive: true }))
      .then(() => appendFile(path, JSON.stringify(bounded) + "\n", { mode: 0o640 }))
      .catch((error: unknown) => this.logger.error({ err: error, file: path }, "cannot append to the audit log"));
    return this.writing;
  }

  /** Newest first. */
  entries(): AuditEntry[] {
    return [...this.recent].reverse();
  }
}
