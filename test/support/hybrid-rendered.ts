import { writeFile } from "node:fs/promises";
import { dirname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { openHybridSession, parseHybridFlags, type HybridSession } from "../../agent/hybrid/hybrid-session.js";
import { loadTemplate, type TemplateVars } from "../../agent/hybrid/render-config.js";
import { fromDesired, type RenderBalance } from "../../agent/hybrid/render-model.js";
import { parseDesiredState } from "../../agent/model/desired-state.js";
import type { ServerInput } from "./apply.js";
import { templateBackend } from "./haproxy-config.js";
import { freePort, startHaproxy, type RunningHaproxy } from "./haproxy.js";

// From test/support in the sources, and from dist/test/support when a benchmark runs built.
const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = HERE.split(sep).slice(-3).join("/") === "dist/test/support" ? resolve(HERE, "../../..") : resolve(HERE, "../..");
export const DEFAULT_TEMPLATE = join(ROOT, "deploy/hybrid/haproxy.cfg.njk");

export interface RenderedHaproxy {
  h: RunningHaproxy;
  stateFile: string;
  vars: TemplateVars;
  /** The frontend's port (the template's `bind`). */
  port: number;
}

/** HAProxy in master-worker mode, restarted from the default template rendered with fromDesired (as `hafleet-agent render` does). */
export async function startRendered(backends: Array<{ name: string; balance: RenderBalance; servers: ServerInput[] }>, spareSlots: number): Promise<RenderedHaproxy> {
  const h = await startHaproxy({ masterWorker: true, sections: templateBackend("be_placeholder", { slots: 1 }) });
  try {
    const stateFile = join(h.dir, "server-state");
    const port = await freePort();
    const vars: TemplateVars = { adminSocket: h.socket, stateFile, bind: `127.0.0.1:${port}`, nbthread: "1" };
    const desired = parseDesiredState({ backends: backends.map(({ name, servers }) => ({ name, servers })) }, "test");
    const context = fromDesired(desired, { spareSlots });
    const balances = new Map(backends.map((backend) => [backend.name, backend.balance]));
    const template = await loadTemplate(DEFAULT_TEMPLATE);
    await writeFile(h.configPath, template.render({ backends: context.backends.map((backend) => ({ ...backend, balance: balances.get(backend.name) ?? "" })) }, vars));
    await h.restart();
    return { h, stateFile, vars, port };
  } catch (error) {
    await h.stop();
    throw error;
  }
}

/** Hybrid mode's session for a rendered HAProxy, with the flags `hafleet-agent run` would get. */
export function hybridSessionFor(rendered: RenderedHaproxy, spareSlots: number): Promise<HybridSession> {
  const { h, stateFile, vars } = rendered;
  const settings = parseHybridFlags({ "config-template": DEFAULT_TEMPLATE, "config-out": h.configPath, "state-file": stateFile, "master-socket": h.masterSocket!, "spare-slots": String(spareSlots), var: Object.entries(vars).map(([key, value]) => `${key}=${value}`) })!;
  return openHybridSession(settings, h.socket);
}
