import { spawn } from "node:child_process";
import { access, copyFile, mkdir, mkdtemp, readFile, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HafleetError, InvalidInputError } from "../../agent/errors.js";
import { CA_FILES, caRuns, leafFiles, leafRuns, opensslConfig, WORK, type LeafProfile, type PairNames, type Validity } from "./cert-profiles.js";

/*
 * The fleet CA on disk: `DIR/ca.crt` and `DIR/ca.key`, and the pairs it issued next to them.
 * openssl runs in a private work directory (mode 0700) on fixed file names; the results are
 * copied into DIR only once every run succeeded, never over an existing file, keys 0600.
 */

export class OpensslError extends HafleetError {
  readonly code = "HAFLEET_OPENSSL";
  constructor(
    readonly command: string,
    detail: string,
  ) {
    super(`openssl ${command} failed: ${detail}`);
    this.name = "OpensslError";
  }
}

/** Creates the fleet CA in `dir`; refuses to replace one (every certificate it signed would be orphaned). */
export async function initFleetCa(dir: string, days: number): Promise<PairNames> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  return produce(dir, CA_FILES, opensslConfig(null), caRuns(days), WORK.ca);
}

/** Issues a certificate for `profile`, signed by the CA in `dir`; returns the paths written. */
export async function issueCertificate(dir: string, profile: LeafProfile, validity: Validity): Promise<PairNames> {
  for (const file of [CA_FILES.cert, CA_FILES.key]) {
    if (!(await exists(join(dir, file)))) throw new InvalidInputError("--dir", [{ path: "--dir", message: `${join(dir, file)} is missing: run 'hafleet certs init --dir ${dir}' first` }]);
  }
  return produce(dir, leafFiles(profile), opensslConfig(profile), leafRuns(profile, validity), { cert: WORK.cert, key: WORK.key }, async (work) => {
    await copyFile(join(dir, CA_FILES.cert), join(work, WORK.ca.cert));
    await copyFile(join(dir, CA_FILES.key), join(work, WORK.ca.key));
  });
}

async function produce(dir: string, target: PairNames, config: string, runs: string[][], made: PairNames, prepare?: (work: string) => Promise<void>): Promise<PairNames> {
  const paths = { cert: join(dir, target.cert), key: join(dir, target.key) };
  for (const path of [paths.cert, paths.key]) {
    if (await exists(path)) throw new InvalidInputError("--dir", [{ path: "--dir", message: `${path} already exists: remove it first, or choose another --dir` }]);
  }
  const work = await mkdtemp(join(tmpdir(), "hafleet-certs-"));
  try {
    await writeFile(join(work, WORK.config), config);
    await writeFile(join(work, WORK.index), "");
    await prepare?.(work);
    for (const args of runs) await openssl(args, work);
    const [cert, key] = await Promise.all([readFile(join(work, made.cert)), readFile(join(work, made.key))]);
    await writeFile(paths.key, key, { flag: "wx", mode: 0o600 });
    try {
      await writeFile(paths.cert, cert, { flag: "wx", mode: 0o644 });
    } catch (error) {
      await unlink(paths.key);
      throw error;
    }
    return paths;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function openssl(args: string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.on("error", (error: NodeJS.ErrnoException) => {
      reject(new OpensslError(args[0]!, error.code === "ENOENT" ? "openssl is not installed (Debian: apt-get install openssl)" : error.message));
    });
    child.on("close", (code) => {
      if (code === 0) resolve();
      else reject(new OpensslError(args[0]!, `exit ${code}: ${stderr.trim().split("\n").slice(-3).join(" | ")}`));
    });
  });
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
