import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, stat, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { Logger } from "pino";
import { HafleetError } from "../errors.js";
import type { RenderContext } from "./render-model.js";
import { syncDirectory } from "../files/write-file-atomic.js";

/**
 * Puts a rendered haproxy.cfg on disk so that the file is always one HAProxy accepted:
 * temp file in the same folder, `haproxy -c`, the old file kept as FILE.bak, atomic rename.
 * A reload reads whatever is there, so a refused render must leave the old file untouched.
 */

/** `haproxy -c` refused the rendered file: its own alert lines, naming the target file. */
export class ConfigRejectedError extends HafleetError {
  readonly code = "HAFLEET_CONFIG_REJECTED";
  constructor(
    readonly file: string,
    readonly alerts: readonly string[],
  ) {
    super(`haproxy -c refused the rendered ${file}; it was not written:\n${alerts.join("\n")}`);
    this.name = "ConfigRejectedError";
  }
}

/** `haproxy -c` could not give a verdict (no binary, killed, timed out): nothing was written. */
export class ConfigCheckError extends HafleetError {
  readonly code = "HAFLEET_CONFIG_CHECK";
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`cannot check ${file} with haproxy -c: ${detail}`);
    this.name = "ConfigCheckError";
  }
}

export interface ConfigCheckOptions {
  /** The haproxy binary (default `haproxy`). */
  haproxyBin?: string;
  /** A small config checks in 20-50 ms, 20,000 servers in ~100 ms (see the notes). */
  checkTimeoutMs?: number;
}

export interface ConfigWriteOptions extends ConfigCheckOptions {
  /** Validate with `haproxy -c` before the rename (default true). */
  check?: boolean;
  /** For a new file; an existing file keeps its mode. */
  mode?: number;
  logger?: Logger;
}

export interface ConfigWriteResult {
  file: string;
  /** False when the file already held these bytes: nothing was checked or written. */
  changed: boolean;
  /** Where the previous file was kept; null when nothing was replaced. */
  backup: string | null;
  /**
   * HAProxy's `[WARNING]` messages about the new file, as it printed them. Which ones depends on
   * the version (a missing server-state file: a WARNING in 2.6, a NOTICE from 2.9, nothing from
   * 3.0), so nothing here relies on their words: the exit code is the verdict.
   */
  warnings: string[];
}

const DEFAULT_CHECK_TIMEOUT_MS = 15_000;
const DEFAULT_MODE = 0o644;
const OUTPUT_LIMIT = 256 * 1024;

export function backupPath(file: string): string {
  return `${file}.bak`;
}

/** Checks, backs up and replaces `file` with `text`, or throws and leaves it as it was. */
export async function writeConfig(file: string, text: string, options: ConfigWriteOptions = {}): Promise<ConfigWriteResult> {
  const bytes = Buffer.from(text, "utf8");
  const previous = await readIfExists(file);
  if (previous !== null && previous.equals(bytes)) return { file, changed: false, backup: null, warnings: [] };

  const dir = dirname(file);
  await mkdir(dir, { recursive: true });
  const mode = previous === null ? (options.mode ?? DEFAULT_MODE) : (await stat(file)).mode & 0o7777;
  const temporary = temporaryPath(file);
  try {
    await writeSynced(temporary, bytes, mode);
    const warnings = options.check === false ? [] : await checkOrThrow(temporary, file, options);
    let backup: string | null = null;
    if (previous !== null) {
      backup = backupPath(file);
      // Through a temp file too: a crash mid-copy must not leave a half backup to restore from.
      const backupTemporary = temporaryPath(backup);
      try {
        await writeSynced(backupTemporary, previous, mode);
        await rename(backupTemporary, backup);
      } finally {
        await removeQuietly(backupTemporary);
      }
    }
    await rename(temporary, file);
    await syncDirectory(dir);
    options.logger?.info({ file, backup, warnings: warnings.length }, "haproxy config written");
    return { file, changed: true, backup, warnings };
  } finally {
    await removeQuietly(temporary);
  }
}

async function checkOrThrow(temporary: string, file: string, options: ConfigCheckOptions): Promise<string[]> {
  const result = await checkConfig(temporary, options);
  const named = (lines: string[]) => lines.map((line) => line.split(temporary).join(file));
  if (!result.valid) throw new ConfigRejectedError(file, named(result.alerts.length > 0 ? result.alerts : [result.output.trim() || "(no output)"]));
  return named(result.warnings);
}

export interface ConfigCheckResult {
  valid: boolean;
  alerts: string[];
  warnings: string[];
  /** stdout and stderr together, as printed. */
  output: string;
}

/** Runs `haproxy -c -f FILE`: exit 0 is valid, any other exit is HAProxy's refusal. */
export function checkConfig(file: string, options: ConfigCheckOptions = {}): Promise<ConfigCheckResult> {
  const bin = options.haproxyBin ?? "haproxy";
  const timeoutMs = options.checkTimeoutMs ?? DEFAULT_CHECK_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const child = spawn(bin, ["-c", "-f", file], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    const append = (chunk: Buffer) => {
      if (output.length < OUTPUT_LIMIT) output += chunk.toString("utf8");
    };
    child.stdout.on("data", append);
    child.stderr.on("data", append);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.once("error", (error) => {
      clearTimeout(timer);
      reject(new ConfigCheckError(file, `cannot run ${JSON.stringify(bin)}: ${error.message}`));
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      if (timedOut) return reject(new ConfigCheckError(file, `no verdict within ${timeoutMs} ms`));
      if (code === null) return reject(new ConfigCheckError(file, `haproxy ended by ${signal ?? "a signal"}`));
      resolve({ valid: code === 0, alerts: haproxyMessages(output, "ALERT"), warnings: haproxyMessages(output, "WARNING"), output });
    });
  });
}

/**
 * HAProxy's messages of one level, each with its continuation lines (`   | ...`), e.g.
 * `[ALERT]    (7604) : config : parsing [h.cfg:20] : unknown keyword 'x' in 'backend' section`.
 */
export function haproxyMessages(output: string, level: "ALERT" | "WARNING" | "NOTICE"): string[] {
  const messages: string[] = [];
  let current: string[] | null = null;
  for (const line of output.split("\n")) {
    if (line.startsWith("[")) {
      if (current) messages.push(current.join("\n"));
      current = line.startsWith(`[${level}]`) ? [line.trimEnd()] : null;
    } else if (current && /^\s+\|/.test(line)) {
      current.push(line.trimEnd());
    } else if (current) {
      messages.push(current.join("\n"));
      current = null;
    }
  }
  if (current) messages.push(current.join("\n"));
  return messages;
}

let sequence = 0;

/** In the target's folder (a rename across filesystems is not atomic), unique per call. */
function temporaryPath(file: string): string {
  sequence += 1;
  return join(dirname(file), `.${basename(file)}.${process.pid}.${sequence}.${randomBytes(3).toString("hex")}.tmp`);
}

async function readIfExists(file: string): Promise<Buffer | null> {
  try {
    return await readFile(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw error;
  }
}

async function writeSynced(path: string, bytes: Buffer, mode: number): Promise<void> {
  const handle = await open(path, "wx", mode);
  try {
    await handle.writeFile(bytes);
    // open()'s mode passes through the umask; the file must end up with the old file's mode.
    await handle.chmod(mode);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function removeQuietly(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch {
    // Already renamed into place, or never created.
  }
}

export interface CoalescingConfigWriterOptions {
  file: string;
  /** Context to file text; run at write time, on the latest context only. */
  render: (context: RenderContext) => string;
  /** At most one write per interval (default 1 s). */
  intervalMs?: number;
  write?: ConfigWriteOptions;
  logger?: Logger;
  /** Replaces writeConfig (tests count writes without a disk or a haproxy binary). */
  writeText?: (text: string) => Promise<ConfigWriteResult>;
}

export interface CoalescingStats {
  requests: number;
  /** Write attempts: written, found unchanged, or failed (render or check). */
  attempts: number;
  written: number;
  unchanged: number;
  failed: number;
}

/**
 * Re-renders the file after applied changes without a write per change: requests within an
 * interval collapse into one write of the latest context. The file may lag what runs by an
 * interval, so anything about to read it (a reload) calls flush() first.
 *
 * A refused write keeps its context pending without retrying on its own (the same context
 * would be refused again); the next request or flush() tries again.
 */
export class CoalescingConfigWriter {
  private pending: RenderContext | null = null;
  /** Bumped by every request, so a write knows whether a newer context came in meanwhile. */
  private generation = 0;
  private timer: NodeJS.Timeout | null = null;
  private timerWriteRunning = false;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  private readonly intervalMs: number;
  private readonly writeText: (text: string) => Promise<ConfigWriteResult>;
  private readonly counters: CoalescingStats = { requests: 0, attempts: 0, written: 0, unchanged: 0, failed: 0 };

  constructor(private readonly options: CoalescingConfigWriterOptions) {
    this.intervalMs = options.intervalMs ?? 1_000;
    if (!(this.intervalMs >= 0)) throw new RangeError(`intervalMs must be >= 0, got ${this.intervalMs}`);
    this.writeText = options.writeText ?? ((text) => writeConfig(options.file, text, { ...options.write, ...(options.logger ? { logger: options.logger } : {}) }));
  }

  /** The latest state to write; earlier ones not yet written are dropped. */
  request(context: RenderContext): void {
    if (this.closed) throw new Error(`config writer for ${this.options.file} is closed`);
    this.pending = context;
    this.generation += 1;
    this.counters.requests += 1;
    if (this.timer === null && !this.timerWriteRunning) this.schedule();
  }

  /** Writes the latest pending context now; null when nothing was pending. Throws what the write threw. */
  async flush(): Promise<ConfigWriteResult | null> {
    this.cancelTimer();
    const outcome = await this.writeLatest();
    if (!outcome.ok) throw outcome.error;
    return outcome.result;
  }

  /** A final flush; later requests throw. */
  async close(): Promise<ConfigWriteResult | null> {
    this.closed = true;
    return this.flush();
  }

  /** Whether a requested state has not reached the file yet (pending, or refused). */
  get dirty(): boolean {
    return this.pending !== null;
  }

  stats(): CoalescingStats {
    return { ...this.counters };
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerWriteRunning = true;
      void this.writeLatest().then((outcome) => {
        this.timerWriteRunning = false;
        if (!outcome.ok) this.options.logger?.error({ file: this.options.file, err: outcome.error }, "haproxy config not written");
        // Requests during the write did not schedule (one write at a time): do it for them.
        if (outcome.newerArrived && !this.closed && this.timer === null) this.schedule();
      });
    }, this.intervalMs);
  }

  private cancelTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Serialised: two writes of the same file never overlap. Never rejects. */
  private writeLatest(): Promise<WriteOutcome> {
    const run = this.queue.then(async (): Promise<WriteOutcome> => {
      const context = this.pending;
      const generation = this.generation;
      if (context === null) return { ok: true, result: null, newerArrived: false };
      this.counters.attempts += 1;
      try {
        const result = await this.writeText(this.options.render(context));
        if (result.changed) this.counters.written += 1;
        else this.counters.unchanged += 1;
        if (this.generation === generation) this.pending = null;
        return { ok: true, result, newerArrived: this.generation !== generation };
      } catch (error) {
        this.counters.failed += 1;
        return { ok: false, error, newerArrived: this.generation !== generation };
      }
    });
    this.queue = run;
    return run;
  }
}

type WriteOutcome = { ok: true; result: ConfigWriteResult | null; newerArrived: boolean } | { ok: false; error: unknown; newerArrived: boolean };
