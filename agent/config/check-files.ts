import { constants } from "node:fs";
import { access, readFile, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { readProblem } from "../cli/read-input.js";
import { InvalidInputError, type InputIssue } from "../errors.js";
import { readTlsFiles, type TlsFiles } from "../tls/tls-files.js";

/*
 * What a start needs of the files a configuration names, checked before it starts, the same
 * for `run` and `check-config`: a file missing, unreadable or not what it should be is found
 * here, one issue each, instead of in a reconnect loop or a state that silently stops saving.
 */

/** The TLS files: each readable, then (all three there) parsed, matched and in date, as a connection would. */
export async function tlsFileIssues(files: TlsFiles, now: number): Promise<InputIssue[]> {
  const unreadable: InputIssue[] = [];
  for (const which of ["ca", "cert", "key"] as const) {
    await readFile(files[which]).catch((error: unknown) => unreadable.push({ path: `tls.${which}`, message: `${files[which]}: cannot be read (${readProblem(error)})` }));
  }
  if (unreadable.length > 0) return unreadable;
  try {
    readTlsFiles(files, now);
    return [];
  } catch (error) {
    if (!(error instanceof InvalidInputError)) throw error;
    return error.issues.map((issue) => ({ ...issue, path: `tls.${issue.path}` }));
  }
}

/**
 * The state dir: a writable folder, or one that can be made (its nearest existing parent is a
 * writable folder). Nothing is created here: check-config may run as another user than the agent.
 */
export async function stateDirProblem(dir: string): Promise<string | null> {
  for (let at = dir; ; at = dirname(at)) {
    let isFolder: boolean;
    try {
      isFolder = (await stat(at)).isDirectory();
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      // Not there (or below a file): what matters is the nearest parent that is there.
      if ((code === "ENOENT" || code === "ENOTDIR") && dirname(at) !== at) continue;
      return `${at}: ${readProblem(error)}`;
    }
    const made = at === dir ? "" : `, so ${dir} cannot be made`;
    if (!isFolder) return `${at} is not a folder${made}`;
    try {
      await access(at, constants.W_OK | constants.X_OK);
    } catch {
      return `${at} is not writable by this user (uid ${process.getuid?.() ?? "?"})${made}: the agent keeps the desired state and its drain ledgers there`;
    }
    return null;
  }
}
