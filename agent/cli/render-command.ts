import type { Logger } from "pino";
import { InvalidInputError, UsageError } from "../errors.js";
import { ConfigRejectedError, writeConfig } from "../hybrid/config-writer.js";
import { loadTemplate, parseTemplateVars } from "../hybrid/render-config.js";
import { fromDesired, MAX_SPARE_SLOTS, type RenderContext } from "../hybrid/render-model.js";
import { parseDesiredStateJson } from "../model/desired-state.js";
import { parseFlags } from "./args.js";
import { EXIT } from "./run-cli.js";
import { readInputFile } from "./read-input.js";
import { terminalSafe, terminalSafeLines } from "./terminal-safe.js";

export const RENDER_HELP = `Usage: hafleet-agent render --template T --desired FILE --out haproxy.cfg [options]

Renders a haproxy.cfg from a nunjucks template and a desired-state file, without any HAProxy
running: each backend's servers in slots srv1..N (ordered by address and port), then spare
disabled slots to grow into at runtime. The file is replaced atomically and the previous one
kept as FILE.bak; a render identical to the file writes nothing.

  --template T        the nunjucks template (includes resolve in its folder only); hafleet's
                      default is deploy/hybrid/haproxy.cfg.njk
  --desired FILE      desired-state JSON ('-' for stdin)
  --out FILE          the haproxy.cfg to write
  --check             validate with 'haproxy -c' first; refused: HAProxy's error, old file kept
  --haproxy BIN       the haproxy binary for --check (default haproxy)
  --spare-slots N     spare disabled slots per backend (default 4)
  --default-weight W  weight of servers without one, and of spare slots (default 1)
  --var KEY=VALUE     a template variable, e.g. --var adminSocket=/run/haproxy/admin.sock
                      (repeat; no line break or '#' in a value)
  -h, --help          this text

Exit codes: 0 written or unchanged; 2 invalid input (desired state, template, variables) or
refused by haproxy -c (old file kept); 3 haproxy -c could not run.`;

const DEFAULT_SPARE_SLOTS = 4;

export async function renderCommand(args: string[], log: Logger): Promise<number> {
  const flags = parseFlags("render", args, {
    template: { type: "string" },
    desired: { type: "string" },
    out: { type: "string" },
    check: { type: "boolean" },
    haproxy: { type: "string" },
    "spare-slots": { type: "string" },
    "default-weight": { type: "string" },
    var: { type: "string", multiple: true },
  });
  if (flags.template === undefined || flags.desired === undefined || flags.out === undefined) {
    throw new UsageError("render needs --template, --desired and --out");
  }
  const spareSlots = parseCount("--spare-slots", flags["spare-slots"], DEFAULT_SPARE_SLOTS, MAX_SPARE_SLOTS);
  const defaultWeight = parseCount("--default-weight", flags["default-weight"], 1, 256);
  const vars = parseTemplateVars(flags.var ?? []);
  const desired = parseDesiredStateJson(await readInputFile(flags.desired, "desired-state file"), flags.desired === "-" ? "stdin" : flags.desired);
  const template = await loadTemplate(flags.template);
  const context = fromDesired(desired, { spareSlots, defaultWeight });
  const text = template.render(context, vars);

  const out = flags.out;
  try {
    const result = await writeConfig(out, text, { check: flags.check ?? false, ...(flags.haproxy ? { haproxyBin: flags.haproxy } : {}), logger: log });
    for (const warning of result.warnings) process.stderr.write(`${terminalSafe(warning)}\n`);
    process.stdout.write(result.changed ? `${out}: written (${describe(context)})\n` : `${out}: unchanged (${describe(context)})\n`);
    return EXIT.ok;
  } catch (error) {
    if (!(error instanceof ConfigRejectedError)) throw error;
    // HAProxy's own words: they name the line of the rendered file that is wrong.
    process.stderr.write(`${terminalSafeLines(`hafleet-agent render: ${error.message}`)}\n${out} was left as it was.\n`);
    return EXIT.invalidInput;
  }
}

function describe(context: RenderContext): string {
  const servers = context.backends.reduce((sum, backend) => sum + backend.servers.length, 0);
  return `${context.backends.length} backend(s), ${servers} server line(s) including spare slots`;
}

function parseCount(flag: string, text: string | undefined, fallback: number, max: number): number {
  if (text === undefined) return fallback;
  const value = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(value <= max)) throw new InvalidInputError(flag, [{ path: flag, message: `must be an integer in 0..${max}`, value: text }]);
  return value;
}

