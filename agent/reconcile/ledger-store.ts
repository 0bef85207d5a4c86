import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "../files/write-file-atomic.js";
import { parseJsonWith } from "../model/validate.js";
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
    return new Map(Object.entries(parseJsonWith(ledgerFileSchema, text, this.path).entries));
  }

  async save(ledger: Ledger): Promise<void> {
    await writeFileAtomic(this.path, JSON.stringify({ socket: this.socket, entries: Object.fromEntries(ledger) }, null, 2) + "\n");
  }
}
