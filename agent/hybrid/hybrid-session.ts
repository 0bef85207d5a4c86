import { readFile } from "node:fs/promises";
import type { Logger } from "pino";
import { InvalidInputError, UsageError } from "../errors.js";
import type { DesiredState } from "../model/desired-state.js";
import type { SocketReport } from "../reconcile/reconciler.js";
import type { RuntimeClient } from "../runtime/runtime-client.js";
import { parseSocketAddress } from "../runtime/socket-address.js";
import { hybridApply, templateDigest, type HybridOutcome } from "./hybrid-apply.js";
import { MasterCli } from "./master-cli.js";
import { Reloader } from "./reloader.js";
import { compileTemplate, parseTemplateVars, type ConfigTemplate, type TemplateVars } from "./render-config.js";
import { MAX_SPARE_SLOTS } from "./render-model.js";
import { saveServerState } from "./state-file.js";
import { CoalescingConfigWriter, writeConfig } from "./config-writer.js";

/** The hybrid flags of `apply`, checked together: a partial set is a usage error, none is pure Runtime API mode. */
/** The hybrid-mode flags, for parseFlags: `apply` and `run` take the same ones. */
export const hybridFlagOptions = {
  "config-template": { type: "string" },
  "config-out": { type: "string" },
  "state-file": { type: "string" },
  "master-socket": { type: "string" },
  "spare-slots": { type: "string" },
  var: { type: "string", multiple: true },
} as const;

export interface HybridFlags {
  "config-template"?: string | undefined;
  "config-out"?: string | undefined;
  "state-file"?: string | undefined;
  "master-socket"?: string | undefined;
  "spare-slots"?: string | undefined;
  var?: string[] | undefined;
}

export interface HybridSettings {
  templatePath: string;
  configFile: string;
  stateFile: string;
  masterSocket: string;
  spareSlots: number;
  varTexts: string[];
}

const REQUIRED = ["config-template", "config-out", "state-file", "master-socket"] as const;
const DEFAULT_SPARE_SLOTS = 4;

export function parseHybridFlags(flags: HybridFlags): HybridSettings | null {
  const given = REQUIRED.filter((flag) => flags[flag] !== undefined);
  if (given.length === 0) {
    if (flags["spare-slots"] !== undefined || (flags.var ?? []).length > 0) throw new UsageError("--spare-slots and --var belong to hybrid mode: give --config-template, --config-out, --state-file and --master-socket too");
    return null;
  }
  if (given.length < REQUIRED.length) {
    const missing = REQUIRED.filter((flag) => flags[flag] === undefined).map((flag) => `--${flag}`);
    throw new UsageError(`hybrid mode needs --config-template, --config-out, --state-file and --master-socket together; missing ${missing.join(", ")}`);
  }
  const spareText = flags["spare-slots"];
  const spareSlots = spareText === undefined ? DEFAULT_SPARE_SLOTS : Number(spareText);
  if (spareText !== undefined && (!/^\d+$/.test(spareText) || spareSlots > MAX_SPARE_SLOTS)) throw new UsageError(`--spare-slots must be an integer in 0..${MAX_SPARE_SLOTS}, got ${JSON.stringify(spareText)}`);
  return {
    templatePath: flags["config-template"]!,
    configFile: flags["config-out"]!,
    stateFile: flags["state-file"]!,
    masterSocket: flags["master-socket"]!,
    spareSlots,
    varTexts: flags.var ?? [],
  };
}

export interface HybridSession {
  settings: HybridSettings;
  template: ConfigTemplate;
  vars: TemplateVars;
  digest: string;
}

/**
 * Reads and compiles the template once: the digest is of the very bytes that render. The
 * default template's `stateFile` and `adminSocket` default to the agent's own flags, so the
 * file HAProxy loads is the one the agent writes.
 */
export async function openHybridSession(settings: HybridSettings, adminSocket: string): Promise<HybridSession> {
  let source: string;
  try {
    source = await readFile(settings.templatePath, "utf8");
  } catch (error) {
    throw new InvalidInputError(settings.templatePath, [{ path: "", message: `cannot read the template: ${(error as Error).message}` }]);
  }
  const template = compileTemplate(source, settings.templatePath);
  const given = parseTemplateVars(settings.varTexts);
  const vars: TemplateVars = { stateFile: settings.stateFile, ...(parseSocketAddress(adminSocket).kind === "unix" ? { adminSocket } : {}), ...given };
  return { settings, template, vars, digest: templateDigest(source, vars) };
}

/** One socket's hybrid step after its reconcile; the Reloader saves the state file right before `reload`. */
export async function runHybrid(
  session: HybridSession,
  client: RuntimeClient,
  desired: DesiredState,
  report: SocketReport,
  reconcile: () => Promise<SocketReport>,
  logger: Logger,
  reloader: Reloader,
  writer?: CoalescingConfigWriter,
): Promise<HybridOutcome> {
  return hybridApply({
    report,
    desired,
    template: session.template,
    digest: session.digest,
    vars: session.vars,
    configFile: session.settings.configFile,
    stateFile: session.settings.stateFile,
    reloader,
    client,
    reconcile,
    spareSlots: session.settings.spareSlots,
    ...(writer ? { writer } : {}),
    logger,
  });
}

/**
 * One per HAProxy for the agent's lifetime: its minimum interval between reloads and its
 * coalescing only hold across applies if every apply goes through the same one.
 */
export function hybridReloader(session: HybridSession, client: RuntimeClient, logger: Logger): Reloader {
  const master = new MasterCli(parseSocketAddress(session.settings.masterSocket), { logger });
  return new Reloader(master, {
    logger,
    prepare: async () => {
      await saveServerState(client, session.settings.stateFile, { logger });
      client.close();
    },
  });
}

/**
 * For the long-running agent: one writer for the session, so renders are coalesced. Each write
 * saves the server-state file too: a reload hafleet does not make (an operator's, a package
 * upgrade's) loads both, and a state file older than the config would put servers the config
 * runs back into the maintenance they were in when it was saved.
 */
export function coalescingWriter(session: HybridSession, client: RuntimeClient, logger: Logger): CoalescingConfigWriter {
  const file = session.settings.configFile;
  return new CoalescingConfigWriter({
    file,
    render: (context) => session.template.render(context, session.vars),
    logger,
    writeText: async (text) => {
      const result = await writeConfig(file, text, { logger });
      await saveServerState(client, session.settings.stateFile, { logger });
      return result;
    },
  });
}

/** One line per outcome for the operator: what was written, reloaded, or why it failed. */
export function formatHybridOutcome(outcome: HybridOutcome, file: string): string {
  const lines: string[] = [];
  lines.push(`${file}: ${outcome.written === null ? "not written" : outcome.written.changed ? "written" : "unchanged"}`);
  if (outcome.reload) lines.push(`reloaded (${outcome.reloadReasons.join("; ")}): worker ${outcome.reload.workerPid} serves (was ${outcome.reload.previousWorkerPids.join(", ") || "none"})`);
  if (outcome.failure !== null) lines.push(`FAILED: ${outcome.failure}${outcome.restored ? `; ${file} was restored to the previous file` : ""}`);
  return lines.join("\n");
}
