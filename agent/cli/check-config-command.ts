import { parseArgs } from "node:util";
import { checkConfigFile } from "../config/check-config-file.js";
import type { ConfigFormat } from "../config/config-file.js";
import { checkAgentSettings, prepareAgentFromFile } from "../config/load-agent-config.js";
import { UsageError } from "../errors.js";

export const CHECK_CONFIG_HELP = `Usage: hafleet-agent check-config [--format yaml|json] [--settings-only] FILE

Checks an agent configuration file (YAML or JSON, the settings of 'hafleet-agent run --config')
as 'run' would, without running anything: the settings, and every file they name (the TLS
CA, certificate and key: readable, parsed, matching, in date; hybrid mode's template) and the
state dir (a writable folder, or one that can be made). Prints 'FILE: ok', or every problem
with its line and field, one a line.

  --format F       read FILE as F whatever its name (a staged copy, such as Ansible's 'validate'
                   makes); by default the name says: *.yaml, *.yml or *.json
  --settings-only  the settings alone, not the files they name nor the state dir: for a copy
                   checked before those are in place (Ansible's 'validate'); a start, and the
                   units' ExecStartPre, check them all

Exit codes: 0 valid; 2 not valid (or unreadable).`;

const FORMATS: readonly ConfigFormat[] = ["yaml", "json"];

export async function checkConfigCommand(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { format: { type: "string" }, "settings-only": { type: "boolean" } }, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const [file, ...extra] = parsed.positionals;
  if (file === undefined || extra.length > 0) throw new UsageError("check-config takes one FILE");
  const given = parsed.values.format;
  const format = FORMATS.find((name) => name === given);
  if (given !== undefined && format === undefined) throw new UsageError(`--format must be yaml or json, got ${JSON.stringify(given)}`);
  if (parsed.values["settings-only"]) return checkConfigFile(file, (path) => checkAgentSettings(path, format));
  return checkConfigFile(file, (path) => prepareAgentFromFile(path, format));
}
