import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { addressSchema, nameSchema, portSchema } from "../../agent/model/values.js";
import { BatchOrderError } from "../../agent/runtime/batch-order.js";
import { RuntimeCommand } from "../../agent/runtime/commands.js";
import { RuntimeClient } from "../../agent/runtime/runtime-client.js";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";
import { applyDesired, serving, summary } from "../support/apply.js";
import { isHaproxyInstalled, parseServersState, startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";

/*
 * The replies that changed between 2.6 and 3.4, on the HAProxy this run uses (HAPROXY_BIN):
 * each must mean the same to the agent on every version. Outcomes are read from HAProxy's own
 * `show servers state` through the harness's raw socket, never from the product's parsers.
 */

let haproxy: RunningHaproxy | undefined;
const closers: Array<() => Promise<void> | void> = [];

beforeAll(async () => {
  expect(await isHaproxyInstalled(), "haproxy must be installed (apt-get install haproxy) or HAPROXY_BIN set").toBe(true);
});

afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  await haproxy?.stop();
  haproxy = undefined;
});

function clientFor(address: string): RuntimeClient {
  const client = new RuntimeClient(parseSocketAddress(address));
  closers.push(() => client.close());
  return client;
}

const name = (text: string) => nameSchema.parse(text);

describe("slots whose address already has the wanted IP (3.0+ answers 'port changed ...' or 'nothing changed')", () => {
  it("fills them and puts them into traffic, where apply once reported success while they took none", async () => {
    // The placeholder has the IP of the endpoints that fill the slots: only the port changes.
    const sections = "backend be_same_ip\n    balance roundrobin\n    server-template srv 1-2 127.0.0.1:1 disabled\n";
    const h = (haproxy = await startHaproxy({ sections }));
    const report = await applyDesired(h, {
      be_same_ip: [
        { address: "127.0.0.1", port: 9101 },
        { address: "127.0.0.1", port: 9102 },
      ],
    });
    expect(report.outcomes.filter((outcome) => !outcome.ok)).toEqual([]);
    expect(report.converged).toBe(true);
    expect(serving(await h.serversState(), "be_same_ip")).toEqual(["127.0.0.1:9101", "127.0.0.1:9102"]);
  });

  it("takes every way a version words a done address change as done, and a refused one as refused", async () => {
    const h = (haproxy = await startHaproxy({ sections: "backend be_app\n    server-template srv 1-1 127.0.0.1:1 disabled\n" }));
    const client = clientFor(h.socket);
    const set = (address: string, port: number) => RuntimeCommand.setAddress(name("be_app"), name("srv1"), addressSchema.parse(address), portSchema.parse(port));
    // One batch each: a change is applied after its reply since 2.9, and the next reply describes it.
    for (const [address, port] of [
      ["127.0.0.1", 1], // nothing differs
      ["127.0.0.1", 8002], // only the port
      ["127.0.0.2", 8002], // only the address
      ["127.0.0.3", 8003], // both
      ["127.0.0.3", 8003], // nothing again
      ["::1", 8003], // another family
    ] as const) {
      const [reply] = await client.run([set(address, port)]);
      expect(reply, JSON.stringify(reply?.text)).toMatchObject({ ok: true });
    }
    const [missing] = await client.run([RuntimeCommand.setAddress(name("be_app"), name("srv9"), addressSchema.parse("127.0.0.1"), portSchema.parse(80))]);
    expect(missing).toMatchObject({ ok: false, reason: "no-such-server" });
    const rows = await h.serversState();
    expect(summary(rows, "be_app")).toEqual({ srv1: "::1:8003 admin=5 w=1" });
  });

  it("refills a freed slot with the same IP and another port", async () => {
    const h = (haproxy = await startHaproxy({ sections: templateBackend("be_app", { slots: 2 }) }));
    await applyDesired(h, { be_app: [{ address: "127.0.0.5", port: 9001 }] });
    const first = summary(await h.serversState(), "be_app");
    // The same host moves to another port: its old slot drains, then is reused for the new port.
    const report = await applyDesired(h, { be_app: [{ address: "127.0.0.5", port: 9002 }] }, { drainMs: 0 });
    expect(report.converged).toBe(true);
    expect(serving(await h.serversState(), "be_app")).toEqual(["127.0.0.5:9002"]);
    expect(Object.values(first)).toContain("127.0.0.5:9001 admin=4 w=1");
  });
});

describe("add server on a backend whose algorithm takes no dynamic server", () => {
  it("is 'dynamic-servers-refused' on every version (3.4 says it in other words)", async () => {
    const h = (haproxy = await startHaproxy({ sections: templateBackend("be_src", { slots: 1, balance: "source" }) }));
    const [reply] = await clientFor(h.socket).run([RuntimeCommand.addServer(name("be_src"), name("dyn1"), addressSchema.parse("127.0.0.1"), portSchema.parse(9001), { check: false })]);
    expect(reply).toMatchObject({ ok: false, reason: "dynamic-servers-refused" });
    expect(reply!.text).toMatch(/dynamic servers/);
  });
});

describe("a read after address changes (2.9+ applies them after answering)", () => {
  const SLOTS = 50;

  it("is never pipelined behind them: the next batch reads every new address, on every version", async () => {
    const h = (haproxy = await startHaproxy({ sections: templateBackend("be_app", { slots: SLOTS }) }));
    const client = clientFor(h.socket);
    const be = name("be_app");
    for (const round of [1, 2, 3]) {
      const changes = Array.from({ length: SLOTS }, (_, index) => RuntimeCommand.setAddress(be, name(`srv${index + 1}`), addressSchema.parse(`127.0.${round}.${index + 1}`), portSchema.parse(9000 + round)));
      // The client refuses the read in the same batch: what it would read may predate the writes.
      await expect(client.run([...changes, RuntimeCommand.showServersState()])).rejects.toBeInstanceOf(BatchOrderError);
      const replies = await client.run(changes);
      expect(replies.every((reply) => reply.ok)).toBe(true);
      const [state] = await client.run([RuntimeCommand.showServersState()]);
      const rows = parseServersState(state!.text).filter((row) => row.be_name === "be_app");
      expect(rows.map((row) => `${row.srv_addr}:${row.srv_port}`)).toEqual(Array.from({ length: SLOTS }, (_, index) => `127.0.${round}.${index + 1}:${9000 + round}`));
    }
  });
});

describe("a 2,000-command batch, within the send window", () => {
  const BACKENDS = 20;
  const SLOTS = 100;

  async function start(): Promise<RunningHaproxy> {
    const sections = Array.from({ length: BACKENDS }, (_, index) => templateBackend(`be_${index}`, { slots: SLOTS })).join("\n");
    return (haproxy = await startHaproxy({ sections, quiet: true, tcpAdmin: true }));
  }

  function changes(round: number): RuntimeCommand[] {
    return Array.from({ length: BACKENDS * SLOTS }, (_, index) => {
      const backend = Math.floor(index / SLOTS);
      const slot = (index % SLOTS) + 1;
      return RuntimeCommand.setAddress(name(`be_${backend}`), name(`srv${slot}`), addressSchema.parse(`127.${round}.${backend}.${slot}`), portSchema.parse(10_000 + slot));
    });
  }

  async function expectApplied(h: RunningHaproxy, round: number): Promise<void> {
    const rows = await h.serversState();
    expect(rows).toHaveLength(BACKENDS * SLOTS);
    for (const row of rows) expect(row.srv_addr).toBe(`127.${round}.${row.be_name!.slice(3)}.${row.srv_name!.slice(3)}`);
  }

  it("gets every reply, and HAProxy runs every change", async () => {
    const h = await start();
    const replies = await clientFor(h.socket).run(changes(1));
    expect(replies).toHaveLength(2_000);
    expect(replies.filter((reply) => !reply.ok)).toEqual([]);
    await expectApplied(h, 1);
  });

  it("gets every reply from an HAProxy that answers slowly (5 ms each way, on TCP)", async () => {
    const h = await start();
    const proxy: TcpProxy = await startTcpProxy(Number(h.tcpSocket!.split(":")[1]));
    closers.push(() => proxy.close());
    proxy.delay(5);
    const started = performance.now();
    const replies = await clientFor(`127.0.0.1:${proxy.port}`).run(changes(2));
    const elapsedMs = performance.now() - started;
    expect(replies.filter((reply) => !reply.ok)).toEqual([]);
    await expectApplied(h, 2);
    // About 90 KB at 8 KB a round trip of 10 ms: the window costs round trips, not a stall.
    expect(elapsedMs).toBeLessThan(10_000);
  });
});
