import { serverEndpoint } from "../../agent/cli/format.js";
import { table } from "../../controller/cli/format-status.js";
import { Load, type LoadCounts } from "./load.js";
import { endpoints, logLines, type HaproxyView } from "./observe.js";
import { HOSTILE_ADDRESS, type Step } from "./scenario.js";
import { BACKEND, SERVICE, writeCatalog, type CatalogEntry, type DemoSetup } from "./demo-setup.js";
import type { DemoStack } from "./demo-stack.js";
import { block, count, liveLine, seconds, serversText } from "./view.js";

/*
 * The scenario against the running pieces: each step writes the catalog and waits until
 * HAProxy's own state serves exactly it and the controller reports the agent in sync, while the
 * load runs and a line a second tells what is what. Every claim printed was read just before.
 */

export interface RunSettings {
  /** How long each step runs on, once it has landed, so its traffic shows. */
  dwellMs: number;
  ratePerSecond: number;
  /** The load's bound in time; its bound in count follows from the rate. */
  loadMaxMs: number;
  /** A step not converged by then fails the demo. */
  convergeTimeoutMs: number;
}

interface StepResult {
  title: string;
  catalog: string;
  /** Catalog write -> HAProxy serving exactly the catalog; null: not applied (held, or it failed). */
  landedMs: number | null;
  /** The summary's last two columns. */
  inHaproxy: string;
  agent: string;
  ok: boolean;
}

const POLL_MS = 50;
// HAProxy's own `timeout server`: a slower answer is a failure there too.
const LOAD_TIMEOUT_MS = 5_000;

export class DemoRun {
  private readonly startedAt = performance.now();
  private readonly results: StepResult[] = [];
  private catalog = { valid: 0, invalid: 0 };
  private load: Load | null = null;
  private ticker: NodeJS.Timeout | null = null;
  private sampling = false;

  constructor(
    private readonly setup: DemoSetup,
    private readonly stack: DemoStack,
    private readonly settings: RunSettings,
    private readonly say: (text: string) => void,
  ) {}

  /** Whether every step converged, no request failed and HAProxy was never reloaded. */
  async run(steps: readonly Step[]): Promise<boolean> {
    this.ticker = setInterval(() => void this.tick(), 1000);
    try {
      for (const [index, step] of steps.entries()) {
        this.say(`\n== ${index + 1}/${steps.length}  ${step.title}\n${block(step.why)}`);
        // Log lines are stamped with the wall clock: the step's own begin after this.
        const begunAt = Date.now();
        const ok = step.kind === "guard" ? await this.guard(step) : await this.scale(step, begunAt);
        if (!ok) break;
        if (this.load === null) this.startLoad();
        await this.dwell(begunAt);
      }
    } finally {
      clearInterval(this.ticker);
    }
    const counts = this.load === null ? null : await this.load.stop();
    return this.summary(steps.length, counts);
  }

  /** Abandons the load (Ctrl-C); the processes are the stack's. */
  async abort(): Promise<void> {
    if (this.ticker !== null) clearInterval(this.ticker);
    await this.load?.abort();
  }

  private startLoad(): void {
    const { ratePerSecond, loadMaxMs } = this.settings;
    this.load = new Load({
      host: "127.0.0.1",
      port: this.setup.frontendPort,
      ratePerSecond,
      maxRequests: Math.ceil((ratePerSecond * loadMaxMs) / 1000),
      maxMs: loadMaxMs,
      timeoutMs: LOAD_TIMEOUT_MS,
    });
    this.say(`   load started: ${ratePerSecond} requests/s through http://127.0.0.1:${this.setup.frontendPort}/, a new connection each`);
  }

  private async scale(step: Extract<Step, { kind: "scale" | "hostile" }>, begunAt: number): Promise<boolean> {
    const entries: CatalogEntry[] = step.upstreams.map((index) => ({ address: "127.0.0.1", port: this.setup.upstreamPorts[index]! }));
    const wanted = entries.map((entry) => `${entry.address}:${entry.port}`).sort();
    const hostile = step.kind === "hostile" ? [{ address: HOSTILE_ADDRESS, port: 80 }] : [];
    const since = await this.writeCatalog([...entries, ...hostile], hostile.length);
    const landedMs = await this.within(since, async () => sameList(endpoints((await this.setup.observer.haproxy()).serving), wanted));
    const syncMs = landedMs === null ? null : await this.within(since, () => this.inSync(wanted.length));
    const result: StepResult = {
      title: step.title,
      catalog: `${wanted.length}${hostile.length > 0 ? " + 1 invalid" : ""}`,
      landedMs,
      inHaproxy: landedMs === null ? "NOT converged" : seconds(landedMs),
      agent: syncMs === null ? "NOT in sync" : seconds(syncMs),
      ok: syncMs !== null,
    };
    this.results.push(result);
    if (!result.ok) {
      this.say(`   NOT converged: ${await this.explain(wanted)}`);
      return false;
    }
    this.say(`   in HAProxy after ${seconds(landedMs!)}, agent in sync after ${seconds(syncMs!)}; ${await this.reloadsText()}`);
    if (step.kind === "hostile") result.ok = await this.showDropped(begunAt, step.upstreams.length);
    return result.ok;
  }

  /** The controller's log names the entry and the reason; HAProxy must have no trace of it. */
  private async showDropped(begunAt: number, index: number): Promise<boolean> {
    const instance = `${SERVICE}[${index}]`;
    let line: Record<string, unknown> | undefined;
    const dropped = await this.within(performance.now(), async () => {
      line = (await logLines(this.setup.controller.log, "instance dropped")).find((entry) => entry.instance === instance && Number(entry.time) >= begunAt);
      return line !== undefined;
    });
    const host = HOSTILE_ADDRESS.split(";")[0]!;
    const all = (await this.setup.observer.haproxy()).all;
    const reached = all.filter((server) => server.rawAddress.startsWith(host));
    this.say(
      line === undefined
        ? `   the controller logged no drop of ${instance} (see ${this.setup.controller.log})`
        : `   controller: dropped ${instance}: ${String(line.reason)}`,
    );
    this.say(reached.length === 0 ? `   HAProxy: no server at ${host} among its ${all.length} servers` : `   HAProxy RUNS ${reached.map(serverEndpoint).join(", ")}`);
    return dropped !== null && reached.length === 0;
  }

  /** Empties the service: the controller must hold, and HAProxy serve on unchanged; then restores it. */
  private async guard(step: Extract<Step, { kind: "guard" }>): Promise<boolean> {
    const before = await this.setup.observer.haproxy();
    const serving = endpoints(before.serving);
    const restore: CatalogEntry[] = serving.map((endpoint) => ({ address: "127.0.0.1", port: Number(endpoint.split(":")[1]) }));
    const failedBefore = this.load?.counts().failed ?? 0;
    const since = await this.writeCatalog([], 0);
    const heldMs = await this.within(since, async () => (await this.setup.observer.sync()).held !== null);
    const held = (await this.setup.observer.sync()).held;
    const result: StepResult = { title: step.title, catalog: "0", landedMs: null, inHaproxy: "NOT held", agent: "-", ok: false };
    this.results.push(result);
    if (heldMs === null || held === null) {
      this.say(`   the controller did NOT hold: ${await this.explain(serving)}`);
      return false;
    }
    this.say(`   controller: held ${BACKEND} after ${seconds(heldMs)}: ${held}; the last good set stands`);
    const unchanged = await this.steady(serving, this.settings.dwellMs);
    const failed = (this.load?.counts().failed ?? 0) - failedBefore;
    this.say(`   HAProxy ${unchanged ? `served its ${serving.length} servers throughout the hold` : "CHANGED during the hold"}; failed requests meanwhile: ${failed}`);
    const restoreSince = await this.writeCatalog(restore, 0);
    const restoredMs = await this.within(restoreSince, async () => (await this.inSync(serving.length)) && sameList(endpoints((await this.setup.observer.haproxy()).serving), serving));
    this.say(restoredMs === null ? `   NOT restored: ${await this.explain(serving)}` : `   restored: the controller took the catalog again after ${seconds(restoredMs)}, nothing to change in HAProxy`);
    result.ok = unchanged && restoredMs !== null;
    result.inHaproxy = unchanged ? `held, kept ${serving.length}` : "CHANGED";
    result.agent = restoredMs === null ? "NOT restored" : "in sync";
    return result.ok;
  }

  /** Whether HAProxy keeps serving exactly `serving` for `ms`, read every POLL_MS. */
  private async steady(serving: readonly string[], ms: number): Promise<boolean> {
    const end = performance.now() + ms;
    while (performance.now() < end) {
      if (!sameList(endpoints((await this.setup.observer.haproxy()).serving), serving)) return false;
      await sleep(POLL_MS);
    }
    return true;
  }

  private async inSync(servers: number): Promise<boolean> {
    const sync = await this.setup.observer.sync();
    return sync.agent === "in-sync" && sync.held === null && sync.desiredServers === servers;
  }

  /** Lets the load run on the step's result, then says what the agent did and where the requests went. */
  private async dwell(begunAt: number): Promise<void> {
    const before = this.load!.counts();
    await sleep(this.settings.dwellMs);
    const after = this.load!.counts();
    const spread = Object.entries(after.byUpstream)
      .map(([upstream, served]) => [upstream, served - (before.byUpstream[upstream] ?? 0)] as const)
      .filter(([, served]) => served > 0)
      .sort(([a], [b]) => a.localeCompare(b, "en", { numeric: true }))
      .map(([upstream, served]) => `:${upstream.split(":")[1]} ${served}`);
    const actions = new Map<string, string[]>();
    for (const line of await logLines(this.setup.agent.log, "server changed")) {
      if (Number(line.time) < begunAt) continue;
      const action = String(line.action);
      actions.set(action, [...(actions.get(action) ?? []), String(line.server)]);
    }
    const did = [...actions].map(([action, servers]) => `${action} ${servers.join(" ")}`).join("; ");
    this.say(block(`agent: ${did === "" ? "nothing to change" : did}`));
    this.say(`   requests in the last ${this.settings.dwellMs / 1000} s, by upstream: ${spread.join("  ") || "none"}; failed ${after.failed - before.failed}`);
  }

  private async writeCatalog(entries: readonly CatalogEntry[], invalid: number): Promise<number> {
    const since = performance.now();
    await writeCatalog(this.setup.catalogFile, entries);
    this.catalog = { valid: entries.length - invalid, invalid };
    return since;
  }

  /** Polls `probe` until it holds; the time since `since`, or null once convergeTimeoutMs passed or a process died. */
  private async within(since: number, probe: () => Promise<boolean>): Promise<number | null> {
    for (;;) {
      try {
        if (await probe()) return performance.now() - since;
      } catch {
        // Not readable right now (a socket being reopened): the next poll tells.
      }
      if (performance.now() - since > this.settings.convergeTimeoutMs || this.exited().length > 0) return null;
      await sleep(POLL_MS);
    }
  }

  /** The demo's processes that are gone: nothing will converge without them. */
  private exited(): string[] {
    return ["haproxy", "controller", "agent", "upstreams"].filter((name) => !this.stack.alive(name));
  }

  private async tick(): Promise<void> {
    if (this.sampling) return;
    this.sampling = true;
    try {
      const [haproxy, sync] = await Promise.all([this.setup.observer.haproxy(), this.setup.observer.sync()]);
      const counts = this.load?.counts();
      this.say(liveLine({ elapsedMs: performance.now() - this.startedAt, catalog: this.catalog, haproxy, sync, served: counts?.served ?? 0, failed: counts?.failed ?? 0 }));
    } catch (error) {
      this.say(`t+${Math.floor((performance.now() - this.startedAt) / 1000)}s  cannot read the state: ${(error as Error).message}`);
    } finally {
      this.sampling = false;
    }
  }

  private async explain(wanted: readonly string[]): Promise<string> {
    const down = this.exited();
    if (down.length > 0) return `${down.join(", ")} exited (logs in ${this.setup.dir})`;
    const [haproxy, sync] = await Promise.all([this.setup.observer.haproxy(), this.setup.observer.sync()]);
    return `after ${seconds(this.settings.convergeTimeoutMs)}, HAProxy serves ${describe(haproxy)}, wanted ${wanted.join(" ") || "nothing"}; agent ${sync.agent}${sync.held === null ? "" : `; controller holding: ${sync.held}`}`;
  }

  private async reloadsText(): Promise<string> {
    const proc = await this.setup.observer.showProc();
    const same = proc.master.reloads === 0 && proc.workers.length === 1 && proc.workers[0]!.pid === this.setup.workerPid;
    return same ? "no reload" : `HAProxy RELOADED (${proc.master.reloads} reloads, workers ${proc.workers.map((worker) => worker.pid).join(",")})`;
  }

  private async summary(planned: number, counts: LoadCounts | null): Promise<boolean> {
    const proc = await this.setup.observer.showProc();
    const reloads = proc.master.reloads;
    const samePid = proc.workers.length === 1 && proc.workers[0]!.pid === this.setup.workerPid;
    const failed = counts?.failed ?? 0;
    const landed = this.results.flatMap((result) => (result.landedMs === null ? [] : [result.landedMs])).sort((a, b) => a - b);
    const stepsOk = this.results.length === planned && this.results.every((result) => result.ok);
    const ok = stepsOk && failed === 0 && reloads === 0 && samePid && counts !== null && counts.served > 0;

    this.say("\n== summary");
    const rows = this.results.map((result) => [result.title, result.catalog, result.inHaproxy, result.agent]);
    this.say(table(["STEP", "CATALOG", "IN HAPROXY", "AGENT IN SYNC"], rows).replace(/^/gm, "   "));
    if (this.results.length < planned) this.say(`   (${planned - this.results.length} step(s) not run)`);
    const [fastest, slowest] = [landed[0], landed[landed.length - 1]];
    const spread = fastest === undefined || slowest === undefined ? "" : seconds(slowest) === seconds(fastest) ? seconds(fastest) : `${seconds(fastest)} to ${seconds(slowest)}`;
    const range = spread === "" ? "" : `, each in HAProxy ${spread} after the catalog write`;
    this.say(`   changes applied: ${landed.length}${range}`);
    this.say(`   reloads: ${reloads} (HAProxy master's show proc; worker pid ${this.setup.workerPid} ${samePid ? "served from start to end" : "was REPLACED"})`);
    if (counts !== null) {
      const reasons = Object.entries(counts.failures).map(([reason, times]) => `${reason} x${times}`).join(", ");
      this.say(`   requests: ${count(counts.sent)} sent through HAProxy, ${count(counts.served)} served`);
      this.say(`   failed requests: ${count(failed)}${reasons === "" ? "" : ` (${reasons})`}`);
    }
    this.say(`   result: ${ok ? "OK" : "FAILED"} after ${seconds(performance.now() - this.startedAt)}`);
    return ok;
  }
}

function describe(view: HaproxyView): string {
  return `${endpoints(view.serving).join(" ") || "nothing"} ${serversText(view)}`;
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((value, index) => value === b[index]);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
