import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { applyDesired, endpoints } from "../support/apply.js";
import { runAgent } from "../support/cli.js";
import { startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";

// `hafleet-agent show --diff`: what an operator runs when status says drifted, against a real
// HAProxy changed behind hafleet's back.

const started: RunningHaproxy[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((h) => h.stop()));
});

describe("hafleet-agent show --diff", () => {
  it("prints desired vs running server by server, exit 1 while they differ and 0 once they do not", async () => {
    const h = await startHaproxy({ sections: templateBackend("be_app", { slots: 4 }) });
    started.push(h);
    const wanted = endpoints(3);
    expect((await applyDesired(h, { be_app: wanted })).converged).toBe(true);
    const file = join(h.dir, "desired.json");
    await writeFile(file, JSON.stringify({ backends: [{ name: "be_app", servers: wanted }] }));
    const row = (address: string) => (h.serversState("be_app") as Promise<Array<Record<string, string>>>).then((rows) => rows.find((server) => server["srv_addr"] === address)!["srv_name"]);
    await h.command(`set server be_app/${await row("127.0.1.2")} state drain`);
    await h.command(`set server be_app/${await row("127.0.1.3")} addr 127.0.9.9 port 9999`);

    const drifted = await runAgent(["show", "--diff", "--socket", h.socket, "--desired", file]);
    expect(drifted.code, drifted.stderr).toBe(1);
    const lines = drifted.stdout.split("\n").map((line) => line.replace(/\s+/g, " ").trim());
    expect(lines).toContain("be_app: 3 difference(s)");
    expect(lines.some((line) => /^= 127\.0\.1\.1:8001 serving srv\d$/.test(line))).toBe(true);
    expect(lines.some((line) => /^! 127\.0\.1\.2:8002 held srv\d \(drain\)$/.test(line))).toBe(true);
    expect(lines).toContain("- 127.0.1.3:8003 missing");
    expect(lines.some((line) => /^\+ 127\.0\.9\.9:9999 unexpected srv\d$/.test(line))).toBe(true);

    await h.command(`set server be_app/${await row("127.0.1.2")} state ready`);
    expect((await applyDesired(h, { be_app: wanted })).converged).toBe(true);
    const fixed = await runAgent(["show", "--diff", "--socket", h.socket, "--desired", file, "--json"]);
    expect(fixed.code, fixed.stderr).toBe(0);
    expect(JSON.parse(fixed.stdout).sockets[0].backends[0].entries.map((entry: { state: string }) => entry.state)).toEqual(["serving", "serving", "serving"]);
  });

  it("refuses --state-dir without --diff, and names the file when the run mode's state is not there", async () => {
    expect((await runAgent(["show", "--socket", "/nonexistent.sock", "--state-dir", "/tmp"])).code).toBe(2);
    const missing = await runAgent(["show", "--diff", "--socket", "/nonexistent.sock", "--state-dir", "/nonexistent/hafleet"]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("/nonexistent/hafleet/desired.json");
  });
});
