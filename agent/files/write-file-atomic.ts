import { close, fsync, mkdir, open, rename, write } from "node:fs";
import { dirname } from "node:path";
import { promisify } from "node:util";

/*
 * Plain file descriptors, not fs/promises' FileHandle: an agent writes its state on every push,
 * and a FileHandle (an object tracked for closing on garbage collection) cost more CPU than the
 * write and the fsync together in the fleet benchmark.
 */
const openFile = promisify(open);
const writeBuffer = promisify(write);
const syncFile = promisify(fsync);
const closeFile = promisify(close);
const renameFile = promisify(rename);
const makeDir = promisify(mkdir);

/**
 * Atomic and durable: a crash leaves the previous file or the new one, never half of one.
 * State files (the desired state, the ledger) are what an agent restarts from.
 */
export async function writeFileAtomic(path: string, text: string, mode = 0o600): Promise<void> {
  const dir = dirname(path);
  const temporary = `${path}.${process.pid}.tmp`;
  const fd = await openCreatingDir(temporary, mode);
  try {
    await writeAll(fd, text);
    await syncFile(fd);
  } finally {
    await closeFile(fd);
  }
  await renameFile(temporary, path);
  await syncDirectory(dir);
}

/** The folder is made only when missing: most writes go to one that exists, and mkdir is a syscall per write. */
async function openCreatingDir(path: string, mode: number): Promise<number> {
  try {
    return await openFile(path, "w", mode);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    await makeDir(dirname(path), { recursive: true });
    return openFile(path, "w", mode);
  }
}

/** write(2) may take less than asked; a short write is finished, not lost. */
async function writeAll(fd: number, text: string): Promise<void> {
  let rest = Buffer.from(text);
  while (rest.length > 0) {
    const { bytesWritten } = await writeBuffer(fd, rest);
    rest = rest.subarray(bytesWritten);
  }
}

/** Makes a rename itself durable; some filesystems refuse fsync on a directory. */
export async function syncDirectory(dir: string): Promise<void> {
  let fd: number;
  try {
    fd = await openFile(dir, "r");
  } catch {
    return;
  }
  try {
    await syncFile(fd);
  } catch {
    // Best effort: the data is already synced, only the directory entry may lag.
  } finally {
    await closeFile(fd);
  }
}
