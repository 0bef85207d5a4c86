import { createServer, get } from "node:http";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { applyDesired, summary } from "../support/apply.js";
import { freePort, isHaproxyInstalled, startHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";

/*
 * `::ffff:127.0.0.1` and `127.0.0.1` name one host. HAProxy keeps whichever form it is given,
 * so hafleet decides: it sends the IPv4 form and reads the mapped one as it.
 */

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

beforeAll(async () => {
  expect(await isHaproxyInstalled(), "haproxy must be installed (apt-get install haproxy) or HAPROXY_BIN set").toBe(true);
});

async function upstream(): Promise<number> {
  const port = await freePort();
  const server = createServer((_request, response) => response.end("ipv4 upstream\n"));
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(port, "127.0.0.1", () => resolve()));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return port;
}

function fetchText(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    get({ host: "127.0.0.1", port, path: "/", agent: false }, (response) => {
      let body = "";
      response.on("data", (chunk: Buffer) => (body += chunk.toString()));
      response.on("end", () => resolve(`${response.statusCode} ${body}`));
    }).on("error", reject);
  });
}

describe("IPv4-mapped IPv6 addresses on a real HAProxy", () => {
  it("HAProxy prints the mapped form it is given; hafleet takes it as the IPv4 server, and sends IPv4", async () => {
    const port = await upstream();
    const h = await startHaproxy({ sections: templateBackend("be_app", { slots: 2 }), defaultBackend: "be_app" });
    cleanups.push(() => h.stop());

    // An operator (or an older hafleet) put the upstream in a slot in the mapped form.
    await h.command(`set server be_app/srv1 addr ::ffff:127.0.0.1 port ${port}`);
    await h.command("set server be_app/srv1 state ready");
    expect(summary(await h.serversState("be_app"), "be_app").srv1).toBe(`::ffff:127.0.0.1:${port} admin=4 w=1`);
    // The same host: a request through the mapped address reaches the IPv4 listener.
    expect(await fetchText(h.frontendPort!)).toBe("200 ipv4 upstream\n");

    // Desired in IPv4 form: already served, nothing to change, and nothing placed twice.
    const same = await applyDesired(h, { be_app: [{ address: "127.0.0.1", port }] });
    expect(same.outcomes).toEqual([]);
    expect(same.converged).toBe(true);

    // Desired in the mapped form: sent as IPv4, so HAProxy shows what an IPv4 config line shows.
    const mapped = await applyDesired(h, { be_app: [{ address: "127.0.0.1", port }, { address: "::ffff:127.0.0.2", port: 9002 }] });
    expect(mapped.converged).toBe(true);
    expect(summary(await h.serversState("be_app"), "be_app").srv2).toBe("127.0.0.2:9002 admin=4 w=1");
  }, 30_000);
});
