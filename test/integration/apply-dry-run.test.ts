import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { summary } from "../support/apply.js";
import { runAgent } from "../support/cli.js";
import { startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";

// `hafleet-agent apply --dry-run`, the built program on a real HAProxy: its text, its exit code
// and its `--json` must say the same thing, and it must change nothing whatever it says.

const started: RunningHaproxy[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((h) => h.stop()));
});

async function start(): Promise<RunningHaproxy> {
  // be_static: static-rr takes no `add server`, so two slots hold two servers and no more.
  const h = await startHaproxy({ sections: templateBackend("be_app", { slots: 3 }) + templateBackend("be_static", { slots: 2, balance: "static-rr" }) });
  started.push(h);
  return h;
}

const server = (n: number) => ({ address: `127.0.4.${n}`, port: 8000 + n });

interface DryRunJson {
  dryRun: boolean;
  sockets: Array<{ converged: boolean; wouldConverge: boolean; plan: { steps: unknown[]; backends: Array<{ backend: string; unplaced: Array<{ endpoint: string; reason: string }> }> } }>;
}

/** The same dry run as text and as JSON, and what HAProxy ran before and after. */
async function dryRun(h: RunningHaproxy, backends: Array<{ name: string; servers: Array<{ address: string; port: number }> }>) {
  const file = join(h.dir, `desired-${Math.random().toString(36).slice(2)}.json`);
  await writeFile(file, JSON.stringify({ version: "v1", backends }));
  const before = await h.serversState();
  const args = ["apply", "--socket", h.socket, "--desired", file, "--dry-run", "--state-dir", join(h.dir, "state")];
  const text = await runAgent(args);
  const json = await runAgent([...args, "--json"]);
  const after = await h.serversState();
  for (const backend of ["be_app", "be_static"]) expect(summary(after, backend)).toEqual(summary(before, backend));
  return { text, json, report: JSON.parse(json.stdout) as DryRunJson };
}

describe("hafleet-agent apply --dry-run", () => {
  it("exits 1 for a backend HAProxy lacks, printing each server not placed and why, as --json does", async () => {
    const h = await start();
    const { text, json, report } = await dryRun(h, [{ name: "be_nope", servers: [server(1), server(2)] }]);
    expect(report.sockets[0]).toMatchObject({ converged: false, wouldConverge: false });
    expect(report.sockets[0]!.plan.backends).toEqual([expect.objectContaining({ backend: "be_nope", unplaced: [{ endpoint: "127.0.4.1:8001", reason: "backend-missing" }, { endpoint: "127.0.4.2:8002", reason: "backend-missing" }] })]);
    expect([text.code, json.code]).toEqual([1, 1]);
    expect(text.stdout).toBe(
      [
        `${h.socket}: 0 change(s) planned`,
        "  not placed: be_nope 127.0.4.1:8001 (backend-missing)",
        "  not placed: be_nope 127.0.4.2:8002 (backend-missing)",
        `${h.socket}: would NOT run the desired state: 2 not placed`,
        "",
      ].join("\n"),
    );
  });

  it("exits 1 when a backend that takes no dynamic servers runs out of slots, though the rest is placed", async () => {
    const h = await start();
    const { text, json, report } = await dryRun(h, [
      { name: "be_app", servers: [server(1)] },
      { name: "be_static", servers: [server(2), server(3), server(4)] },
    ]);
    expect([text.code, json.code, report.sockets[0]!.wouldConverge]).toEqual([1, 1, false]);
    expect(text.stdout).toContain("set server be_app/srv1 addr 127.0.4.1 port 8001");
    expect(text.stdout).toContain("  not placed: be_static 127.0.4.4:8004 (no-free-slot)");
    expect(text.stdout).toMatch(/: would NOT run the desired state: 1 not placed\n$/);
  });

  it("exits 0 when the plan would converge, though HAProxy does not run it yet", async () => {
    const h = await start();
    const { text, json, report } = await dryRun(h, [{ name: "be_app", servers: [server(1), server(2)] }]);
    // `converged` is about now, `wouldConverge` about after the plan: the exit code is the latter.
    expect(report.sockets[0]).toMatchObject({ converged: false, wouldConverge: true });
    expect([text.code, json.code]).toEqual([0, 0]);
    expect(text.stdout).toMatch(new RegExp(`^${h.socket}: 2 change\\(s\\) planned\\n`));
    expect(text.stdout).not.toContain("not placed");
    expect(text.stdout).toMatch(/: would run the desired state after these changes\n$/);
  });

  it("exits 0 with nothing to do", async () => {
    const h = await start();
    const { text, report } = await dryRun(h, [{ name: "be_app", servers: [] }]);
    expect(report.sockets[0]).toMatchObject({ converged: true, wouldConverge: true });
    expect([text.code, text.stdout]).toEqual([0, `${h.socket}: 0 change(s) planned\n${h.socket}: would run the desired state after these changes\n`]);
  });
});
