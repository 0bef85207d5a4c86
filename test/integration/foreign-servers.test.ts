import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { applyDesired, serving, summary, type ServerInput } from "../support/apply.js";
import { isHaproxyInstalled, startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { ledgerFileName } from "../../agent/reconcile/ledger-store.js";

/*
 * A backend that mixes an operator's hand-written servers with template slots, driven through
 * the product's reconciler. Every verdict about the hand-written servers is HAProxy's own
 * `show servers state`, read on a fresh connection by the harness.
 */

const HAND_WRITTEN = ["web1", "web2", "web3"];

// web1 serves; an operator took web2 out (maint) and is draining web3 at runtime.
const MIXED = `backend be_mixed
    balance roundrobin
    server web1 127.0.0.1:7001 weight 100
    server web2 127.0.0.1:7002 weight 100
    server web3 127.0.0.1:7003 weight 100
    server-template srv 1-2 0.0.0.0:80 disabled weight 10
`;

let haproxy: RunningHaproxy | undefined;
afterEach(async () => {
  await haproxy?.stop();
  haproxy = undefined;
});

beforeAll(async () => {
  expect(await isHaproxyInstalled(), "haproxy must be installed (apt-get install haproxy) or HAPROXY_BIN set").toBe(true);
});

/** Every column but the clock, per hand-written server. */
async function handWritten(h: RunningHaproxy): Promise<Record<string, Record<string, string>>> {
  const rows = await h.serversState("be_mixed");
  return Object.fromEntries(
    rows.filter((row) => HAND_WRITTEN.includes(row.srv_name!)).map(({ srv_time_since_last_change: _clock, ...row }) => [row.srv_name!, row]),
  );
}

function endpoints(hosts: number[]): ServerInput[] {
  return hosts.map((host) => ({ address: `127.0.5.${host}`, port: 8000 + host }));
}

describe("servers hafleet did not place", () => {
  it("are never drained, disabled, re-addressed, weighted or deleted: apply, scale up and down, empty, unmap, restart", async () => {
    const h = (haproxy = await startHaproxy({ sections: MIXED }));
    await h.command("set server be_mixed/web2 state maint");
    await h.command("set server be_mixed/web3 state drain");
    // The ledger an earlier version left, under its old file name, after the mapping typo: its
    // own drain of web3, which it would have finished with a maintenance.
    const stateDir = join(h.dir, "state");
    await mkdir(stateDir, { recursive: true });
    const legacy = { socket: h.socket, entries: { "be_mixed/web3": { state: "drain", endpoint: "127.0.0.1:7003", since: 0 } } };
    await writeFile(join(stateDir, `ledger-${h.socket.replace(/[^A-Za-z0-9._-]/g, "_")}.json`), JSON.stringify(legacy));
    const before = await handWritten(h);
    expect(Object.keys(before)).toEqual(HAND_WRITTEN);
    const unchanged = async (step: string) => expect(await handWritten(h), step).toEqual(before);

    const first = await applyDesired(h, { be_mixed: endpoints([1, 2]) });
    expect(first.converged).toBe(true);
    expect(first.final.backends[0]!.foreign).toEqual([
      { server: "web1", endpoint: "127.0.0.1:7001", admin: "ready", desired: false },
      { server: "web2", endpoint: "127.0.0.1:7002", admin: "maint", desired: false },
      { server: "web3", endpoint: "127.0.0.1:7003", admin: "drain", desired: false },
    ]);
    expect(summary(await h.serversState("be_mixed"), "be_mixed")).toMatchObject({ srv1: "127.0.5.1:8001 admin=4 w=10", srv2: "127.0.5.2:8002 admin=4 w=10" });
    await unchanged("apply");
    // Read once under the old name, then moved to the new one.
    expect(await readdir(stateDir)).toEqual([ledgerFileName(h.socket)]);

    // Past the slots: dynamic servers, weighted like the slots.
    const up = await applyDesired(h, { be_mixed: endpoints([1, 2, 3, 4]) });
    expect(up.converged).toBe(true);
    expect(summary(await h.serversState("be_mixed"), "be_mixed")).toMatchObject({ "hafleet-127.0.5.3-8003": "127.0.5.3:8003 admin=0 w=10" });
    await unchanged("scale up");

    // web1's endpoint desired, with a weight of its own: web1 counts as serving it, untouched;
    // web2's, held out of rotation by the operator: no copy placed.
    const claimed = await applyDesired(h, { be_mixed: [...endpoints([1, 2, 3, 4]), { address: "127.0.0.1", port: 7001, weight: 3 }, { address: "127.0.0.1", port: 7002 }] });
    expect(claimed.outcomes).toEqual([]);
    expect(claimed.final.backends[0]!.held).toEqual([{ server: "web2", endpoint: "127.0.0.1:7002", admin: "maint", desired: true }]);
    await unchanged("desired endpoints of hand-written servers");

    // Down to one: hafleet's own servers drain, go to maintenance, and the dynamic ones go.
    const down = await applyDesired(h, { be_mixed: endpoints([1]) });
    expect(down.converged).toBe(true);
    expect(down.outcomes.map((o) => `${o.step.action} ${o.step.server}`).sort()).toEqual([
      "delete hafleet-127.0.5.3-8003",
      "delete hafleet-127.0.5.4-8004",
      "drain hafleet-127.0.5.3-8003",
      "drain hafleet-127.0.5.4-8004",
      "drain srv2",
      "maint hafleet-127.0.5.3-8003",
      "maint hafleet-127.0.5.4-8004",
      "maint srv2",
    ]);
    expect(serving(await h.serversState("be_mixed"), "be_mixed")).toEqual(["127.0.0.1:7001", "127.0.5.1:8001"]);
    await unchanged("scale down");

    // Allowed to empty: only hafleet's last server goes.
    const empty = await applyDesired(h, { be_mixed: [] }, { allowEmpty: true });
    expect(empty.converged).toBe(true);
    expect(serving(await h.serversState("be_mixed"), "be_mixed")).toEqual(["127.0.0.1:7001"]);
    await unchanged("empty");

    // Unmapped: the backend is no longer desired, nothing in it changes.
    await applyDesired(h, { be_mixed: endpoints([6]) });
    const running = await h.serversState("be_mixed");
    const unmapped = await applyDesired(h, {});
    expect(unmapped.outcomes).toEqual([]);
    expect(summary(await h.serversState("be_mixed"), "be_mixed")).toEqual(summary(running, "be_mixed"));

    // A restart brings the slots back `disabled` from the config, and hafleet takes them again.
    await h.restart();
    const refilled = await applyDesired(h, { be_mixed: endpoints([1, 2]) });
    expect(refilled.converged).toBe(true);
    expect(serving(await h.serversState("be_mixed"), "be_mixed")).toEqual(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003", "127.0.5.1:8001", "127.0.5.2:8002"]);
    expect(summary(await h.serversState("be_mixed"), "be_mixed")).toMatchObject({
      web1: "127.0.0.1:7001 admin=0 w=100",
      web2: "127.0.0.1:7002 admin=0 w=100",
      web3: "127.0.0.1:7003 admin=0 w=100",
    });
  }, 60_000);
});
