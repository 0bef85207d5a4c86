import { mkdir, open, rename } from "node:fs/promises";
import { dirname } from "node:path";

/**
 * Atomic and durable: a crash leaves the previous file or the new one, never half of one.
 * State files (the desired state, the ledger) are what an agent restarts from.
 */
export async function writeFileAtomic(path: string, text: string, mode = 0o600): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const temporary = `${path}.${process.pid}.tmp`;
  const file = await open(temporary, "w", mode);
  try {
    await file.writeFile(text);
    await file.sync();
  } finally {
    await file.close();
  }
  await rename(temporary, path);
  await syncDirectory(dir);
}

/** Makes a rename itself durable; some filesystems refuse fsync on a directory. */
export async function syncDirectory(dir: string): Promise<void> {
  try {
    const handle = await open(dir, "r");
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // Best effort: the data is already synced, only the directory entry may lag.
  }
}
