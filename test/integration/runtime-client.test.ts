import { afterEach, describe, expect, it } from "vitest";
import { RuntimeCommand } from "../../agent/runtime/commands.js";
import { RuntimeClient } from "../../agent/runtime/runtime-client.js";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";
import { addressSchema, nameSchema, portSchema } from "../../agent/model/values.js";
import { ConnectError, ConnectionLostError } from "../../agent/errors.js";
import { parseServersState } from "../../agent/runtime/parsers/servers-state.js";
import { startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";
import { applyDesired, summary } from "../support/apply.js";

let haproxy: RunningHaproxy | undefined;
let client: RuntimeClient | undefined;
afterEach(async () => {
  client?.close();
  await haproxy?.stop();
  haproxy = client = undefined;
});

const backend = nameSchema.parse("be_app");
const slot = (i: number) => nameSchema.parse(`srv${i}`);

function moveSlot(i: number, port: number): RuntimeCommand {
  return RuntimeCommand.setAddress(backend, slot(i), addressSchema.parse(`127.0.${Math.floor(i / 250)}.${(i % 250) + 1}`), portSchema.parse(port));
}

describe("the Runtime API client on a real HAProxy", () => {
  it("pipelines a large batch and matches every reply to its command, an error in the 500th included", async () => {
    haproxy = await startHaproxy({ sections: templateBackend("be_app", { slots: 1000 }) });
    client = new RuntimeClient(parseSocketAddress(haproxy.socket));
    const commands = Array.from({ length: 1000 }, (_, i) => moveSlot(i + 1, 9000));
    commands[499] = RuntimeCommand.setState(backend, nameSchema.parse("no_such_server"), "ready");

    const replies = await client.run(commands);

    expect(replies).toHaveLength(1000);
    const failed = replies.flatMap((reply, index) => (reply.ok ? [] : [{ index, command: reply.command.text, text: reply.text, reason: reply.reason }]));
    expect(failed).toEqual([{ index: 499, command: "set server be_app/no_such_server state ready", text: "No such server.", reason: "no-such-server" }]);
    expect(replies[500]!.text).toBe("IP changed from '0.0.0.0' to '127.0.2.2', port changed from '80' to '9000' by 'stats socket command'");
    // The commands after the failed one ran: HAProxy's own state says so.
    const state = summary(await haproxy.serversState("be_app"), "be_app");
    expect(state.srv1000).toBe("127.0.4.1:9000 admin=5 w=1");
    expect(state.srv500).toBe("0.0.0.0:80 admin=5 w=1");
  });

  it("serialises concurrent calls on one connection", async () => {
    haproxy = await startHaproxy({ sections: templateBackend("be_app", { slots: 20 }) });
    client = new RuntimeClient(parseSocketAddress(haproxy.socket));
    // A write and the read that checks it go in two batches: 2.9+ applies an address after answering (batch-order.ts).
    const batches = Array.from({ length: 20 }, async (_, i) => [...(await client!.run([moveSlot(i + 1, 7000 + i)])), ...(await client!.run([RuntimeCommand.showServersState()]))]);
    const results = await Promise.all(batches);
    results.forEach((replies, i) => {
      expect(replies[0]!.ok).toBe(true);
      const rows = parseServersState(replies[1]!.text);
      expect(rows.find((row) => row.server === `srv${i + 1}`)!.port).toBe(7000 + i);
    });
  });

  it("reconnects on the next call after HAProxy restarted, and a read is retried transparently", async () => {
    haproxy = await startHaproxy({ sections: templateBackend("be_app", { slots: 2 }) });
    client = new RuntimeClient(parseSocketAddress(haproxy.socket));
    await client.run([RuntimeCommand.showInfo()]);
    await haproxy.restart();
    const [info] = await client.run([RuntimeCommand.showInfo()]);
    expect(info!.text).toContain(`Pid: ${haproxy.pid()}`);
  });

  it("fails a change batch clearly when HAProxy dies, without retrying it", async () => {
    haproxy = await startHaproxy({ sections: templateBackend("be_app", { slots: 2 }) });
    client = new RuntimeClient(parseSocketAddress(haproxy.socket));
    await client.run([RuntimeCommand.showInfo()]);
    await haproxy.kill();
    const error = await client.run([moveSlot(1, 8080)]).catch((e: unknown) => e);
    expect(error instanceof ConnectionLostError || error instanceof ConnectError).toBe(true);
    expect((error as Error).message).toContain(haproxy.socket);
  });

  it("names the socket when it cannot connect", async () => {
    client = new RuntimeClient(parseSocketAddress("/nonexistent/hafleet/admin.sock"), { connectTimeoutMs: 500 });
    await expect(client.run([RuntimeCommand.showInfo()])).rejects.toThrow(/cannot connect to HAProxy at \/nonexistent\/hafleet\/admin\.sock/);
  });
});

describe("the Runtime API client over TCP", () => {
  it("applies through a TCP admin socket as through a unix one", async () => {
    haproxy = await startHaproxy({ sections: templateBackend("be_app", { slots: 2 }), tcpAdmin: true });
    const report = await applyDesired(haproxy, { be_app: [{ address: "127.0.0.7", port: 8007 }] }, { client: (client = new RuntimeClient(parseSocketAddress(haproxy.tcpSocket!))) });
    expect(report.socket).toBe(haproxy.tcpSocket);
    expect(report.converged).toBe(true);
    expect(summary(await haproxy.serversState("be_app"), "be_app").srv1).toBe("127.0.0.7:8007 admin=4 w=1");
  });
});
