import { afterEach, describe, expect, it } from "vitest";
import { startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";
import { applyDesired, endpoints, serving, summary } from "../support/apply.js";
import { RuntimeClient } from "../../agent/runtime/runtime-client.js";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";

// Every assertion reads HAProxy's own `show servers state`, through the harness's raw
// socket code, never the product's bookkeeping.

let haproxy: RunningHaproxy | undefined;
afterEach(async () => {
  await haproxy?.stop();
  haproxy = undefined;
});

async function start(sections: string): Promise<RunningHaproxy> {
  haproxy = await startHaproxy({ sections });
  return haproxy;
}

describe("applying desired servers to a real HAProxy", () => {
  it("fills template slots with address, port, weight and ready", async () => {
    const h = await start(templateBackend("be_app", { slots: 4, weight: 10 }));
    const report = await applyDesired(h, { be_app: [{ address: "127.0.0.11", port: 8001, weight: 50 }, { address: "127.0.0.12", port: 8002 }] });
    expect(report.converged).toBe(true);
    expect(summary(await h.serversState(), "be_app")).toEqual({
      srv1: "127.0.0.11:8001 admin=4 w=50",
      srv2: "127.0.0.12:8002 admin=4 w=10",
      srv3: "0.0.0.0:80 admin=5 w=10",
      srv4: "0.0.0.0:80 admin=5 w=10",
    });
  });

  it("is idempotent: the same state twice sends nothing the second time", async () => {
    const h = await start(templateBackend("be_app", { slots: 4 }));
    await applyDesired(h, { be_app: endpoints(3) });
    const before = await h.serversState();
    const again = await applyDesired(h, { be_app: endpoints(3) });
    expect(again.outcomes).toEqual([]);
    expect(again.converged).toBe(true);
    expect(summary(await h.serversState(), "be_app")).toEqual(summary(before, "be_app"));
  });

  it("scales past the slots with dynamic servers, health-checked where the backend checks", async () => {
    const h = await start(templateBackend("be_app", { slots: 2, check: true }));
    const report = await applyDesired(h, { be_app: endpoints(5) });
    expect(report.converged).toBe(true);
    const rows = await h.serversState("be_app");
    expect(serving(rows, "be_app")).toEqual(endpoints(5).map((e) => `${e.address}:${e.port}`).sort());
    const dynamic = rows.filter((row) => row.srv_name!.startsWith("hafleet-"));
    expect(dynamic.map((row) => row.srv_name)).toEqual(["hafleet-127.0.1.3-8003", "hafleet-127.0.1.4-8004", "hafleet-127.0.1.5-8005"]);
    // srv_check_state 0x02: a check is configured on the dynamic server.
    for (const row of dynamic) expect(Number(row.srv_check_state) & 0x02).toBe(2);
  });

  it("scales down by draining, then maintenance, then reusing the freed slot", async () => {
    const h = await start(templateBackend("be_app", { slots: 3 }));
    await applyDesired(h, { be_app: endpoints(3) });

    // Drained first; it has no sessions, so the next pass puts it in maintenance: its slot is
    // free. (drain-sessions.test.ts shows a drain that waits for sessions.)
    const down = await applyDesired(h, { be_app: endpoints(2) });
    expect(down.outcomes.map((o) => `${o.step.action} ${o.step.server}`)).toEqual(["drain srv3", "maint srv3"]);
    expect(summary(await h.serversState(), "be_app").srv3).toBe("127.0.1.3:8003 admin=5 w=1");

    await applyDesired(h, { be_app: [...endpoints(2), { address: "127.0.9.9", port: 9999 }] });
    expect(summary(await h.serversState(), "be_app").srv3).toBe("127.0.9.9:9999 admin=4 w=1");
  });

  it("deletes dynamic servers that are no longer desired", async () => {
    const h = await start(templateBackend("be_app", { slots: 1 }));
    await applyDesired(h, { be_app: endpoints(3) });
    const report = await applyDesired(h, { be_app: endpoints(1) });
    expect(report.converged).toBe(true);
    expect(Object.keys(summary(await h.serversState(), "be_app"))).toEqual(["srv1"]);
  });

  it("changes weights in place", async () => {
    const h = await start(templateBackend("be_app", { slots: 2 }));
    await applyDesired(h, { be_app: endpoints(2) });
    const report = await applyDesired(h, { be_app: endpoints(2, 1, 77) });
    expect(report.outcomes.map((o) => o.step.action)).toEqual(["set-weight", "set-weight"]);
    expect(summary(await h.serversState(), "be_app")).toEqual({ srv1: "127.0.1.1:8001 admin=4 w=77", srv2: "127.0.1.2:8002 admin=4 w=77" });
  });

  it("leaves a server an operator drained or put in maintenance alone, and reports it", async () => {
    const h = await start(templateBackend("be_app", { slots: 3 }));
    await applyDesired(h, { be_app: endpoints(2) });
    await h.command("set server be_app/srv1 state drain");
    await h.command("set server be_app/srv2 state maint");
    const report = await applyDesired(h, { be_app: endpoints(2, 1, 9) });
    expect(report.final.backends[0]!.held.map((held) => `${held.server}:${held.admin}`)).toEqual(["srv1:drain", "srv2:maint"]);
    expect(summary(await h.serversState(), "be_app")).toMatchObject({ srv1: "127.0.1.1:8001 admin=12 w=1", srv2: "127.0.1.2:8002 admin=5 w=1" });
  });

  it("reports what it cannot place on a static-rr backend and keeps the backend serving", async () => {
    const h = await start(templateBackend("be_static", { slots: 2, balance: "static-rr" }));
    await applyDesired(h, { be_static: endpoints(2) });
    const report = await applyDesired(h, { be_static: [...endpoints(2), { address: "127.0.9.9", port: 9999 }] });
    expect(report.converged).toBe(false);
    expect(report.final.backends[0]!.unplaced).toEqual([{ endpoint: "127.0.9.9:9999", reason: "no-free-slot" }]);
    expect(serving(await h.serversState(), "be_static")).toEqual(["127.0.1.1:8001", "127.0.1.2:8002"]);
  });

  it("moves every server of a full static-rr backend without ever emptying it", async () => {
    const h = await start(templateBackend("be_static", { slots: 2, balance: "static-rr" }));
    await applyDesired(h, { be_static: endpoints(2) });
    const report = await applyDesired(h, { be_static: endpoints(2, 2) });
    expect(report.converged).toBe(true);
    expect(serving(await h.serversState(), "be_static")).toEqual(["127.0.2.1:8001", "127.0.2.2:8002"]);
    // One slot at a time: a server is drained only once a new one serves, never both at once.
    expect(report.outcomes.map((o) => `${o.step.action} ${o.step.server}`)).toEqual([
      "drain srv2",
      "maint srv2",
      "fill-slot srv2",
      "drain srv1",
      "maint srv1",
      "fill-slot srv1",
    ]);
  });

  it("reports a backend HAProxy does not have, and applies the others", async () => {
    const h = await start(templateBackend("be_app", { slots: 2 }));
    const report = await applyDesired(h, { be_app: endpoints(1), be_missing: endpoints(1) });
    expect(report.converged).toBe(false);
    expect(report.final.backends.find((b) => b.backend === "be_missing")!.unplaced[0]!.reason).toBe("backend-missing");
    expect(serving(await h.serversState(), "be_app")).toEqual(["127.0.1.1:8001"]);
  });

  it("refuses to empty a serving backend from an empty list", async () => {
    const h = await start(templateBackend("be_app", { slots: 2 }));
    await applyDesired(h, { be_app: endpoints(2) });
    const report = await applyDesired(h, { be_app: [] });
    expect(report.converged).toBe(false);
    expect(serving(await h.serversState(), "be_app")).toEqual(["127.0.1.1:8001", "127.0.1.2:8002"]);
  });

  it("carries on after HAProxy restarts under a long-lived client, and re-applies", async () => {
    const h = await start(templateBackend("be_app", { slots: 3 }));
    const client = new RuntimeClient(parseSocketAddress(h.socket));
    try {
      await applyDesired(h, { be_app: endpoints(2) }, { client });
      await h.restart();
      // A restart forgets runtime changes: HAProxy is back to its configuration.
      expect(serving(await h.serversState(), "be_app")).toEqual([]);
      const report = await applyDesired(h, { be_app: endpoints(2) }, { client });
      expect(report.converged).toBe(true);
      expect(serving(await h.serversState(), "be_app")).toEqual(["127.0.1.1:8001", "127.0.1.2:8002"]);
    } finally {
      client.close();
    }
  });
});
