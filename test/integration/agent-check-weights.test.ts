import { createServer, type Server } from "node:net";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { applyDesired, summary } from "../support/apply.js";
import { freePort, isHaproxyInstalled, startHaproxy, type RunningHaproxy } from "../support/haproxy.js";

/*
 * HAProxy's agent-check sets a server's weight from the application: a tiny agent answers
 * `50%` on every connection, so HAProxy runs each slot at half its configured weight (100).
 * hafleet re-applies as a resync does; the weights stay the agent's unless the desired one changes.
 */

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

beforeAll(async () => {
  expect(await isHaproxyInstalled(), "haproxy must be installed (apt-get install haproxy) or HAPROXY_BIN set").toBe(true);
});

/** Answers `50%` and closes, as an agent-check agent does. */
async function agent(): Promise<number> {
  const port = await freePort();
  const server: Server = createServer((socket) => {
    // HAProxy resets the connection once it has read the line.
    socket.on("error", () => undefined);
    socket.end("50%\n");
  });
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(port, "127.0.0.1", () => resolve()));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return port;
}

async function weights(h: RunningHaproxy): Promise<Record<string, string>> {
  const rows = await h.serversState("be_app");
  return Object.fromEntries(Object.entries(summary(rows, "be_app")).map(([name, text]) => [name, text.slice(text.indexOf(" w=") + 3)]));
}

async function waitFor(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe("weights hafleet did not set", () => {
  it("stay what agent-check set through resyncs; only a changed desired weight is applied", async () => {
    const agentPort = await agent();
    const h = await startHaproxy({
      sections: `backend be_app
    balance roundrobin
    server-template srv 1-2 0.0.0.0:80 disabled weight 100 agent-check agent-port ${agentPort} agent-inter 200
`,
    });
    cleanups.push(() => h.stop());
    // One server with the backend's own weight, one with a desired weight of its own.
    const wanted = (weight: number) => ({ be_app: [{ address: "127.0.0.1", port: 9001 }, { address: "127.0.0.1", port: 9002, weight }] });

    const placed = await applyDesired(h, wanted(80));
    expect(placed.converged).toBe(true);
    await waitFor("the agent's 50%", async () => JSON.stringify(await weights(h)) === JSON.stringify({ srv1: "50", srv2: "50" }));

    for (let resync = 0; resync < 5; resync++) {
      const again = await applyDesired(h, wanted(80));
      expect(again.outcomes, `resync ${resync}`).toEqual([]);
      expect(again.converged).toBe(true);
    }
    // Longer than an agent interval after the last resync: nothing fought the agent.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await weights(h)).toEqual({ srv1: "50", srv2: "50" });

    // The desired weight changes: applied once, then the agent has its say again.
    const changed = await applyDesired(h, wanted(90));
    expect(changed.outcomes.map((o) => [o.ok, o.step.action, o.step.server, o.step.prepare.concat(o.step.commit).map((c) => c.text)])).toEqual([
      [true, "set-weight", "srv2", ["set server be_app/srv2 weight 90"]],
    ]);
    await waitFor("the agent's 50% again", async () => (await weights(h)).srv2 === "50");
    expect((await applyDesired(h, wanted(90))).outcomes).toEqual([]);
    expect(await weights(h)).toEqual({ srv1: "50", srv2: "50" });
  }, 30_000);
});
