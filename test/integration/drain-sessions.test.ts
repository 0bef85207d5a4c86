import { connect, createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";
import { applyDesired, summary } from "../support/apply.js";

let haproxy: RunningHaproxy | undefined;
let upstream: Server | undefined;
const sockets: Socket[] = [];
afterEach(async () => {
  sockets.splice(0).forEach((socket) => socket.destroy());
  await haproxy?.stop();
  await new Promise((resolve) => (upstream ? upstream.close(resolve) : resolve(undefined)));
  haproxy = upstream = undefined;
});

/** A backend server that accepts connections and never answers: sessions stay open. */
async function silentUpstream(): Promise<number> {
  upstream = createServer((socket) => sockets.push(socket));
  await new Promise<void>((resolve) => upstream!.listen(0, "127.0.0.1", resolve));
  return (upstream.address() as { port: number }).port;
}

async function openSession(port: number): Promise<void> {
  const socket = connect({ host: "127.0.0.1", port });
  sockets.push(socket);
  await new Promise<void>((resolve) => socket.on("connect", resolve));
  socket.write("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
}

async function sessionsOn(h: RunningHaproxy, server: string): Promise<number> {
  const csv = await h.command("show stat");
  const [header, ...rows] = csv.split("\n");
  const names = header!.replace(/^# /, "").split(",");
  const row = rows.map((line) => line.split(",")).find((fields) => fields[0] === "be_app" && fields[1] === server)!;
  return Number(row[names.indexOf("scur")]);
}

describe("draining a removed server that still has sessions", () => {
  it("keeps it in DRAIN while sessions last, then puts it in MAINT when the drain period ends", async () => {
    const port = await silentUpstream();
    haproxy = await startHaproxy({ sections: templateBackend("be_app", { slots: 2 }), defaultBackend: "be_app" });
    const h = haproxy;
    await applyDesired(h, { be_app: [{ address: "127.0.0.1", port }] });
    await openSession(h.frontendPort!);
    await expect.poll(() => sessionsOn(h, "srv1"), { timeout: 5_000 }).toBe(1);

    const replacement = { be_app: [{ address: "127.0.0.2", port: 9 }] };
    const options = { drainMs: 1_500, waitMs: 0 };
    await applyDesired(h, replacement, options);
    expect(summary(await h.serversState(), "be_app").srv1).toMatch(/admin=12 /);

    // A second pass before the drain period ends: a session is open, so it stays in DRAIN.
    await applyDesired(h, replacement, options);
    expect(summary(await h.serversState(), "be_app").srv1).toMatch(/admin=12 /);
    expect(await sessionsOn(h, "srv1")).toBe(1);

    // Waiting passes: once the drain period is over it goes to MAINT even with the session.
    const report = await applyDesired(h, replacement, { drainMs: 1_500, waitMs: 10_000 });
    expect(report.converged).toBe(true);
    expect(summary(await h.serversState(), "be_app").srv1).toMatch(/admin=5 /);
  });
});
