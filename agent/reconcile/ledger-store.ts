import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { InvalidInputError } from "../errors.js";
import { issuesOf } from "../model/desired-state.js";
import { ledgerFileSchema, type Ledger, type LedgerEntry } from "./ledger.js";

/**
 * Keeps one socket's ledger in the state directory, so that a one-shot `apply` from cron
 * still knows, next time, which drains and maintenances were its own.
 */
export class LedgerStore {
  readonly path: string;

  constructor(
    stateDir: string,
    private readonly socket: string,
  ) {
    this.path = join(stateDir, `ledger-${socket.replace(/[^A-Za-z0-9._-]/g, "_")}.json`);
  }

  async load(): Promise<Map<string, LedgerEntry>> {
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return new Map();
      throw error;
    }
    let input: unknown;
    try {
      input = JSON.parse(text);
    } catch (error) {
      throw new InvalidInputError(this.path, [{ path: "", message: `not valid JSON: ${(error as Error).message}` }]);
    }
    const parsed = ledgerFileSchema.safeParse(input);
    if (!parsed.success) throw new InvalidInputError(this.path, issuesOf(parsed.error, input));
    return new Map(Object.entries(parsed.data.entries));
  }

  /** Atomic: a crash mid-write leaves the previous ledger, never half a file. */
  async save(ledger: Ledger): Promise<void> {
    await mkdir(join(this.path, ".."), { recursive: true });
    const temporary = `${this.path}.${process.pid}.tmp`;
    await writeFile(temporary, JSON.stringify({ socket: this.socket, entries: Object.fromEntries(ledger) }, null, 2) + "\n");
    await rename(temporary, this.path);
  }
}
