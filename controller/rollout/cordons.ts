import { join } from "node:path";
import { z } from "zod";
import { writeFileAtomic } from "../../agent/files/write-file-atomic.js";
import { parseJsonWith } from "../../agent/model/validate.js";
import { readStateFile } from "../core/state-file.js";

/*
 * Agents an operator keeps out of rollouts ('hafleet cordon AGENT'): no wave holds them, so
 * they run the last good state of a staged backend until its rollout completes, and nothing
 * they do judges a wave. Kept in stateDir across restarts; without one, in memory only.
 */

const FILE = "cordons.json";
const entrySchema = z.strictObject({ reason: z.string().min(1).max(512), since: z.number().int().min(0) });
const cordonsFileSchema = z.strictObject({ format: z.literal(1), agents: z.record(z.string().min(1).max(253), entrySchema) });
export type Cordon = z.output<typeof entrySchema>;

export class Cordons {
  private readonly agents = new Map<string, Cordon>();
  private saving: Promise<void> = Promise.resolve();

  private constructor(private readonly stateDir: string | undefined) {}

  /** The stored cordons; a file that does not parse throws: better not start than put a cordoned host in a canary. */
  static async load(stateDir: string | undefined): Promise<Cordons> {
    const cordons = new Cordons(stateDir);
    if (stateDir === undefined) return cordons;
    const path = join(stateDir, FILE);
    const text = await readStateFile(path);
    if (text === null) return cordons;
    for (const [agent, entry] of Object.entries(parseJsonWith(cordonsFileSchema, text, path).agents)) cordons.agents.set(agent, entry);
    return cordons;
  }

  reason(agent: string): string | null {
    return this.agents.get(agent)?.reason ?? null;
  }

  /** Cordons (reason) or uncordons (null); resolves once stored. Returns whether anything changed. */
  async set(agent: string, reason: string | null, now: number): Promise<boolean> {
    const had = this.agents.has(agent);
    if (reason === null) this.agents.delete(agent);
    else this.agents.set(agent, { reason, since: this.agents.get(agent)?.since ?? now });
    const stateDir = this.stateDir;
    if (stateDir !== undefined) {
      const text = JSON.stringify({ format: 1, agents: Object.fromEntries(this.agents) }) + "\n";
      const write = this.saving.catch(() => undefined).then(() => writeFileAtomic(join(stateDir, FILE), text));
      this.saving = write;
      await write;
    }
    return reason !== null || had;
  }
}
