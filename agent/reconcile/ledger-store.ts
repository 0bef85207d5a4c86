import { createHash } from "node:crypto";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "../files/write-file-atomic.js";
import { parseJsonWith } from "../model/validate.js";
import { ledgerFileSchema, type Ledger, type LedgerEntry } from "./ledger.js";

/** Enough of the socket name to tell files apart by eye; the hash tells them apart for sure. */
const READABLE_LENGTH = 64;
/** 64 bits of SHA-256: no two socket names of one host collide in practice. */
const HASH_LENGTH = 16;
const UNSAFE = /[^A-Za-z0-9._-]/g;

/**
 * Keeps one socket's ledger in the state directory, so that a one-shot `apply` from cron
 * still knows, next time, which drains and maintenances were its own.
 */
export class LedgerStore {
  readonly path: string;
  /** Where versions before the hash kept it: read once when `path` does not exist yet. */
  private readonly legacyPath: string;
  /** Set when load() read the legacy file: the first save() moves it to `path`. */
  private migrating = false;

  constructor(
    stateDir: string,
    private readonly socket: string,
  ) {
    this.path = join(stateDir, ledgerFileName(socket));
    this.legacyPath = join(stateDir, `ledger-${socket.replace(UNSAFE, "_")}.json`);
  }

  async load(): Promise<Map<string, LedgerEntry>> {
    const current = await this.read(this.path);
    if (current !== null) return current.entries;
    const legacy = await this.read(this.legacyPath);
    // The old name was shared by sockets that differ only in the characters it replaced
    // (`/a_b.sock`, `/a/b.sock`): the file is this socket's only if it names it.
    if (legacy === null || legacy.socket !== this.socket) return new Map();
    this.migrating = true;
    return legacy.entries;
  }

  async save(ledger: Ledger): Promise<void> {
    await writeFileAtomic(this.path, JSON.stringify({ socket: this.socket, entries: Object.fromEntries(ledger) }, null, 2) + "\n");
    if (!this.migrating) return;
    // Removed only once the new file holds the entries, so a crash in between loses nothing.
    await rm(this.legacyPath, { force: true });
    this.migrating = false;
  }

  private async read(path: string): Promise<{ socket: string; entries: Map<string, LedgerEntry> } | null> {
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw error;
    }
    const file = parseJsonWith(ledgerFileSchema, text, path);
    return { socket: file.socket, entries: new Map(Object.entries(file.entries)) };
  }
}

/**
 * `ledger-<readable>-<hash>.json`: the readable part alone mapped `/a_b.sock` and `/a/b.sock`
 * to one file; the hash of the exact socket name keeps every socket's ledger apart.
 */
export function ledgerFileName(socket: string): string {
  const readable = socket.replace(UNSAFE, "_").slice(0, READABLE_LENGTH);
  const hash = createHash("sha256").update(socket).digest("hex").slice(0, HASH_LENGTH);
  return `ledger-${readable}-${hash}.json`;
}
