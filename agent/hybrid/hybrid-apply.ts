import { createHash } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import type { Logger } from "pino";
import { writeFileAtomic } from "../files/write-file-atomic.js";
import type { DesiredServer, DesiredState } from "../model/desired-state.js";
import { endpointKey } from "../model/values.js";
import type { SocketReport } from "../reconcile/reconciler.js";
import type { ObservedBackend } from "../reconcile/observed-state.js";
import type { RuntimeClient } from "../runtime/runtime-client.js";
import { backupPath, ConfigRejectedError, writeConfig, type CoalescingConfigWriter, type ConfigWriteOptions, type ConfigWriteResult } from "./config-writer.js";
import type { ConfigTemplate, TemplateVars } from "./render-config.js";
import { DEFAULT_SLOT_PREFIX, formatEndpoint, fromDesired, fromObserved, HAPROXY_DEFAULT_WEIGHT, nextSlotNames, PLACEHOLDER_ADDRESS, slotPrefixOf, type RenderBackend, type RenderContext, type RenderServer } from "./render-model.js";
import { ReloadFailedError, ReloadTimeoutError, type ReloadResult, type Reloader } from "./reloader.js";
import { saveServerState, StateFileWriteError } from "./state-file.js";

/**
 * Hybrid mode's policy, run after each reconcile: the config file always follows what runs,
 * and HAProxy is reloaded only when the Runtime API cannot do the job (slots exhausted on a
 * backend that refuses dynamic servers, a backend the running HAProxy lacks) or the template
 * changed. A failed reload leaves the
 * old worker serving, so the file is put back to what that worker was started from.
 */

export interface HybridPlanOptions {
  /** Free disabled slots each rendered backend keeps, to grow into without a reload. */
  spareSlots: number;
}

export interface SlotShortage {
  backend: string;
  /** The desired endpoints the Runtime API could not place; rendered as new slot lines. */
  endpoints: string[];
}

export interface HybridPlan {
  context: RenderContext;
  /** Non-empty: only a reload from the rendered file can run these servers. */
  shortages: SlotShortage[];
  /** Desired backends the running HAProxy lacks: rendered from the desired state, run by a reload. */
  missing: string[];
}

/**
 * Pure: what runs (the report's last read-back) plus the servers that could not be placed
 * for lack of a slot, as a render context. Unplaced servers get new slot names after every
 * name HAProxy runs, so no line from the server-state file can apply to them on the reload
 * (a reused name would inherit the old slot's maintenance and placeholder port).
 */
export function planHybrid(report: SocketReport, desired: DesiredState, options: HybridPlanOptions): HybridPlan {
  const managed = desired.backends.map((backend) => backend.name);
  const base = fromObserved(report.observed, { backends: managed, spareSlots: options.spareSlots });
  const shortages: SlotShortage[] = [];
  for (const backend of report.final.backends) {
    const short = backend.unplaced.filter((entry) => entry.reason === "no-free-slot").map((entry) => entry.endpoint);
    if (short.length > 0) shortages.push({ backend: backend.backend, endpoints: short });
  }
  const missingBackends = desired.backends.filter((backend) => !report.observed.has(backend.name));
  const missing = missingBackends.map((backend) => backend.name as string);
  // Named srv1..N like `hafleet-agent render` names them; the template's own balance applies.
  const added = fromDesired({ backends: missingBackends }, { spareSlots: options.spareSlots }).backends;
  const withMissing = (backends: readonly RenderBackend[]): RenderContext => ({ backends: [...backends, ...added].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)) });
  if (shortages.length === 0) return { context: withMissing(base.backends), shortages, missing };

  const byBackend = new Map(shortages.map((shortage) => [shortage.backend, shortage.endpoints]));
  const backends = base.backends.map((rendered): RenderBackend => {
    const endpoints = byBackend.get(rendered.name);
    const observed = report.observed.get(rendered.name);
    const wanted = desired.backends.find((backend) => backend.name === rendered.name);
    if (endpoints === undefined || observed === undefined || wanted === undefined) return rendered;
    return withNewSlots(rendered, observed, serversFor(endpoints, wanted.servers));
  });
  return { context: withMissing(backends), shortages, missing };
}

function serversFor(endpoints: readonly string[], servers: readonly DesiredServer[]): DesiredServer[] {
  const byKey = new Map(servers.map((server) => [endpointKey(server.address, server.port), server]));
  return endpoints.flatMap((endpoint) => {
    const server = byKey.get(endpoint);
    return server === undefined ? [] : [server];
  });
}

/**
 * The running servers, then the unplaced ones in new slots, then the spare slots renumbered
 * after them: re-rendering once the reload has run them gives the same lines, in id order.
 */
function withNewSlots(rendered: RenderBackend, observed: ObservedBackend, add: readonly DesiredServer[]): RenderBackend {
  const runningNames = observed.servers.map((server) => server.rawName);
  const running = new Set(runningNames);
  const kept = rendered.servers.filter((server) => running.has(server.name));
  const spareCount = rendered.servers.length - kept.length;
  const slots = observed.servers.filter((server) => !server.dynamic);
  const prefix = slotPrefixOf(slots.flatMap((server) => (server.name === null ? [] : [server.name]))) ?? DEFAULT_SLOT_PREFIX;
  // The weight the planner would have filled a slot with: the backend's configured one.
  const model = slots.find((server) => server.address === null) ?? slots[0];
  const slotWeight = model?.initialWeight ?? HAPROXY_DEFAULT_WEIGHT;
  const names = nextSlotNames(runningNames, prefix, add.length);
  const added = add.map((server, index): RenderServer => entry(names[index]!, server.address, server.port, server.weight ?? slotWeight, false));
  const spareNames = nextSlotNames([...runningNames, ...names], prefix, spareCount);
  const spares = spareNames.map((name): RenderServer => entry(name, PLACEHOLDER_ADDRESS, 80, slotWeight, true));
  return { ...rendered, servers: [...kept, ...added, ...spares] };
}

function entry(name: string, address: string, port: number, weight: number, disabled: boolean): RenderServer {
  return { name, address, port, endpoint: formatEndpoint(address, port), weight, disabled };
}

/** What identifies a render's non-server part: the template's bytes and the variables. */
export function templateDigest(source: string, vars: TemplateVars): string {
  const sorted = Object.fromEntries(Object.entries(vars).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return createHash("sha256").update(source).update("\0").update(JSON.stringify(sorted)).digest("hex");
}

/** Beside the config: which template (digest) the file was last rendered and run from. */
export function templateStampPath(file: string): string {
  return `${file}.template-sha256`;
}

export interface HybridApplyInput {
  /** The reconcile that just ran (not a dry run). */
  report: SocketReport;
  desired: DesiredState;
  template: ConfigTemplate;
  /** templateDigest() of the source `template` was compiled from, with `vars`. */
  digest: string;
  vars: TemplateVars;
  configFile: string;
  stateFile: string;
  reloader: Pick<Reloader, "reload">;
  /** The admin connection the reconcile used: closed around a reload, so it reaches the new worker. */
  client: RuntimeClient;
  /** Reconciles again (on the new worker after a reload). */
  reconcile: () => Promise<SocketReport>;
  spareSlots: number;
  write?: ConfigWriteOptions;
  /**
   * The long-running agent's writer: renders that need no reload are coalesced (at most one
   * write and `haproxy -c` per interval); a reload flushes it first. Absent: write at once.
   */
  writer?: CoalescingConfigWriter;
  logger: Logger;
}

export interface HybridOutcome {
  /**
   * False: the hybrid step failed (a refused render, a failed or unconfirmed reload, servers
   * still unplaced after a reload). The change succeeded when ok and report.converged.
   */
  ok: boolean;
  /** The last reconcile's report (after the reload when there was one). */
  report: SocketReport;
  written: ConfigWriteResult | null;
  reload: ReloadResult | null;
  reloadReasons: string[];
  /** Why the change failed; null when ok. */
  failure: string | null;
  /** The previous file was put back after a failed reload. */
  restored: boolean;
}

/** How long a new worker may take to answer the admin socket after the master lists it. */
const WORKER_TAKEOVER_MS = 3_000;

export async function hybridApply(input: HybridApplyInput): Promise<HybridOutcome> {
  const log = input.logger.child({ file: input.configFile });
  const plan = planHybrid(input.report, input.desired, { spareSlots: input.spareSlots });
  const base = { report: input.report, reload: null, reloadReasons: [] as string[], restored: false };
  const write = (context: RenderContext): Promise<ConfigWriteResult | null> => {
    if (!input.writer) return writeConfig(input.configFile, input.template.render(context, input.vars), { ...input.write, logger: log });
    input.writer.request(context);
    return input.writer.flush();
  };

  const stamp = templateStampPath(input.configFile);
  const previousDigest = await readIfExists(stamp);
  const reasons = [
    ...plan.shortages.map((shortage) => `${shortage.backend}: ${shortage.endpoints.length} server(s) without a free slot`),
    ...plan.missing.map((backend) => `${backend}: not in the running HAProxy`),
  ];
  // No stamp: nothing says which template HAProxy runs; assume this one rather than reload on every first apply.
  if (previousDigest !== null && previousDigest.trim() !== input.digest) reasons.push("the template or its variables changed");
  let written: ConfigWriteResult | null = null;
  try {
    // Nothing to reload: the long-running agent's render can wait for the coalescing writer.
    if (reasons.length === 0 && input.writer) input.writer.request(plan.context);
    else written = await write(plan.context);
  } catch (error) {
    if (error instanceof ConfigRejectedError) return { ...base, ok: false, written: null, failure: error.message };
    throw error;
  }
  if (reasons.length === 0) {
    if (previousDigest === null) await writeFileAtomic(stamp, `${input.digest}\n`, 0o644);
    return { ...base, ok: true, written, failure: null };
  }

  for (const shortage of plan.shortages) log.info({ backend: shortage.backend, servers: shortage.endpoints.length }, "reload needed: no free slot, and the backend refuses dynamic servers");
  for (const backend of plan.missing) log.info({ backend }, "reload needed: the running HAProxy has no such backend");
  if (reasons.length > plan.shortages.length + plan.missing.length) log.info({ stamp }, "reload needed: the template or its variables changed");
  let reload: ReloadResult;
  try {
    await saveServerState(input.client, input.stateFile, { logger: log });
    // A kept-alive admin connection stays on the old worker, which would then be read and changed.
    input.client.close();
    reload = await input.reloader.reload();
  } catch (error) {
    // Nothing reloaded, or nobody knows: the file holds the wanted state, and the next reload starts it.
    if (error instanceof StateFileWriteError || error instanceof ReloadTimeoutError) {
      log.error({ err: error }, "no reload");
      return { ...base, ok: false, written, reloadReasons: reasons, failure: error.message };
    }
    if (!(error instanceof ReloadFailedError)) throw error;
    const restored = written !== null && written.changed && written.backup !== null ? await restore(input.configFile) : false;
    log.error({ err: error, restored }, restored ? "reload failed; the previous config file is back in place" : "reload failed; no previous config file to put back");
    return { ...base, ok: false, written, reloadReasons: reasons, restored, failure: error.message };
  }
  // The re-reconcile must read the new worker, not an old one still accepting for a moment.
  const serving = await input.client.awaitWorker(reload.workerPid, WORKER_TAKEOVER_MS);
  if (serving?.pid !== reload.workerPid) log.warn({ worker: reload.workerPid, answered: serving?.pid ?? null }, "the new worker does not answer the admin socket yet; reconciling anyway");

  // The reload may have lost what the file did not hold (servers added at runtime meanwhile).
  const report = await input.reconcile();
  const after = planHybrid(report, input.desired, { spareSlots: input.spareSlots });
  await write(after.context);
  await writeFileAtomic(stamp, `${input.digest}\n`, 0o644);
  const failure =
    after.shortages.length > 0 ? "servers still without a slot after the reload" : after.missing.length > 0 ? `backends still missing after the reload: ${after.missing.join(", ")}` : null;
  return { ...base, ok: failure === null, report, written, reload, reloadReasons: reasons, failure };
}

/** The backup holds the file the serving worker was started from (or last rewritten to). */
async function restore(file: string): Promise<boolean> {
  const text = await readFile(backupPath(file), "utf8");
  const mode = (await stat(file)).mode & 0o7777;
  await writeFileAtomic(file, text, mode);
  return true;
}

async function readIfExists(path: string): Promise<string | null> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw error;
  }
}
