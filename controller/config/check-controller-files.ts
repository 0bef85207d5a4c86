import { readFile } from "node:fs/promises";
import { readProblem } from "../../agent/cli/read-input.js";
import { stateDirProblem, tlsFileIssues } from "../../agent/config/check-files.js";
import { InvalidInputError, type InputIssue } from "../../agent/errors.js";
import type { ControllerConfig } from "./controller-config.js";

/*
 * What a start needs of the files a controller configuration names, checked the same way by
 * `--check-config` (the unit's ExecStartPre) and by the start itself: a missing certificate, a
 * short token or a state dir that cannot be written is one line naming it, before anything
 * listens, instead of a crash, a restart loop, or a freeze that silently stops persisting.
 */

/** Mutating API requests carry this token; shorter ones are guessable. */
export const MIN_TOKEN_LENGTH = 16;

export async function controllerFileIssues(config: ControllerConfig, now: number): Promise<InputIssue[]> {
  const issues: InputIssue[] = [];
  if (config.tls !== undefined) issues.push(...(await tlsFileIssues(config.tls, now)));
  for (const field of ["tokenFile", "readTokenFile"] as const) {
    const tokenFile = config.http[field];
    if (tokenFile === undefined) continue;
    const problem = await readFile(tokenFile, "utf8").then(
      (text) => {
        const length = (text.split("\n")[0] ?? "").trim().length;
        return length < MIN_TOKEN_LENGTH ? `the first line of ${tokenFile} must be a token of at least ${MIN_TOKEN_LENGTH} characters (got ${length})` : null;
      },
      (error: unknown) => `${tokenFile}: cannot be read (${readProblem(error)})`,
    );
    if (problem !== null) issues.push({ path: `http.${field}`, message: problem });
  }
  if (config.stateDir !== undefined) {
    const problem = await stateDirProblem(config.stateDir);
    if (problem !== null) issues.push({ path: "stateDir", message: `${problem}: the controller keeps the freeze, cordons and rollout state there` });
  }
  return issues;
}

/** The config, or InvalidInputError (from `source`) naming every file problem. */
export async function checkedControllerConfig(config: ControllerConfig, source: string, now: number): Promise<ControllerConfig> {
  const issues = await controllerFileIssues(config, now);
  if (issues.length > 0) throw new InvalidInputError(source, issues);
  return config;
}
