import { access } from "node:fs/promises";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { benchmarkSections, instanceConfig, templateBackend } from "./haproxy-config.js";
import {
  isHaproxyInstalled,
  isProcessAlive,
  parseServersState,
  startHaproxy,
  type HaproxyOptions,
  type RunningHaproxy,
} from "./haproxy.js";
import { sendRaw } from "./raw-socket.js";

const started: RunningHaproxy[] = [];

async function start(options: HaproxyOptions): Promise<RunningHaproxy> {
  const instance = await startHaproxy(options);
  started.push(instance);
  return instance;
}

function infoPid(info: string): number {
  const match = /^Pid: (\d+)$/m.exec(info);
  if (!match?.[1]) throw new Error(`no Pid in show info: ${info.slice(0, 200)}`);
  return Number(match[1]);
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

beforeAll(async () => {
  if (!(await isHaproxyInstalled())) {
    throw new Error("haproxy is not installed: apt-get install haproxy (2.6), or set HAPROXY_BIN");
  }
});

afterEach(async () => {
  await Promise.all(started.splice(0).map((instance) => instance.stop()));
});

describe("config builders", () => {
  it("renders template slots with optional check and weight", () => {
    expect(templateBackend("be_web", { slots: 3 })).toBe(
      "backend be_web\n    balance roundrobin\n    server-template srv 1-3 0.0.0.0:80 disabled\n",
    );
    expect(templateBackend("be_x", { slots: 2, prefix: "s", balance: "leastconn", check: true, weight: 7 })).toContain(
      "server-template s 1-2 0.0.0.0:80 disabled check weight 7",
    );
    expect(() => templateBackend("be_x", { slots: 0 })).toThrow(RangeError);
  });

  it("builds benchmark backends be_0..be_N-1 and a frontend only when asked", () => {
    const sections = benchmarkSections(3, 5);
    expect(sections.match(/^backend /gm)).toHaveLength(3);
    expect(sections).toContain("backend be_2\n");
    expect(instanceConfig({ adminSocket: "/x.sock", sections })).not.toContain("frontend");
    expect(instanceConfig({ adminSocket: "/x.sock", sections, frontend: { port: 8080, defaultBackend: "be_0" } })).toContain(
      "bind 127.0.0.1:8080",
    );
  });
});

describe("parseServersState", () => {
  it("names fields by the header and rejects an error reply", () => {
    const rows = parseServersState("1\n# be_id be_name srv_name srv_addr\n2 be_a srv1 10.0.0.1\n\n");
    expect(rows).toEqual([{ be_id: "2", be_name: "be_a", srv_name: "srv1", srv_addr: "10.0.0.1" }]);
    expect(() => parseServersState("Can't find backend.\n")).toThrow(/unexpected/);
  });
});

describe("startHaproxy", () => {
  it("starts an instance whose admin socket shows the template slots", async () => {
    const haproxy = await start({ sections: templateBackend("be_app", { slots: 3 }) });
    expect(isProcessAlive(haproxy.pid())).toBe(true);
    expect(haproxy.frontendPort).toBeNull();
    expect(haproxy.masterSocket).toBeNull();

    const rows = await haproxy.serversState("be_app");
    expect(rows.map((row) => row["srv_name"])).toEqual(["srv1", "srv2", "srv3"]);
    // A `disabled` template slot is in forced + config maintenance (bits 0x1 | 0x4).
    expect(rows.every((row) => row["srv_admin_state"] === "5" && row["srv_port"] === "80")).toBe(true);
    expect(await haproxy.command("show backend")).toContain("be_app");
  });

  it("serves the frontend on its free port, answering 503 while every slot is in maintenance", async () => {
    const haproxy = await start({ sections: templateBackend("be_app", { slots: 1 }), defaultBackend: "be_app" });
    expect(haproxy.frontendPort).toBeGreaterThan(0);
    const response = await fetch(`http://127.0.0.1:${haproxy.frontendPort}/`);
    expect(response.status).toBe(503);
  });

  it("fails with HAProxy's own alert when the config is invalid, leaving nothing behind", async () => {
    const attempt = startHaproxy({ sections: "backend be_bad\n    no-such-keyword 1\n" });
    await expect(attempt).rejects.toThrow(/no-such-keyword/);
  });

  it("restart() brings a new process back on the same socket, with the config's state", async () => {
    const haproxy = await start({ sections: templateBackend("be_app", { slots: 2 }) });
    const before = haproxy.pid();
    const reply = await haproxy.command("set server be_app/srv1 addr 127.0.0.9 port 9999");
    expect(reply).toContain("IP changed from '0.0.0.0' to '127.0.0.9'");

    await haproxy.restart();

    expect(haproxy.pid()).not.toBe(before);
    expect(isProcessAlive(before)).toBe(false);
    const slot = (await haproxy.serversState("be_app")).find((row) => row["srv_name"] === "srv1");
    expect(slot?.["srv_addr"]).toBe("0.0.0.0");
  });

  it("kill() leaves no process and stop() after it removes the dir, twice without error", async () => {
    const haproxy = await start({ sections: templateBackend("be_app", { slots: 1 }) });
    const pid = haproxy.pid();
    await haproxy.kill();
    expect(isProcessAlive(pid)).toBe(false);
    await expect(haproxy.command("show info")).rejects.toThrow();

    await haproxy.stop();
    await haproxy.stop();
    expect(await exists(haproxy.dir)).toBe(false);
  });

  it("restart() after kill() recovers from the simulated crash", async () => {
    const haproxy = await start({ sections: templateBackend("be_app", { slots: 1 }) });
    await haproxy.kill();
    await haproxy.restart();
    expect(await haproxy.command("show info")).toContain(`Pid: ${haproxy.pid()}`);
  });
});

describe("master-worker mode", () => {
  it("answers on the master socket and takes its worker down with it", async () => {
    const haproxy = await start({ sections: templateBackend("be_app", { slots: 1 }), masterWorker: true });
    if (haproxy.masterSocket === null) throw new Error("masterSocket missing");
    const worker = infoPid(await haproxy.command("show info"));
    expect(worker).not.toBe(haproxy.pid());

    const proc = await sendRaw(haproxy.masterSocket, "show proc");
    expect(proc).toMatch(new RegExp(`^${haproxy.pid()}\\s+master`, "m"));
    expect(proc).toMatch(new RegExp(`^${worker}\\s+worker`, "m"));
    // `@1` routes a command through the master to the first worker.
    expect(await sendRaw(haproxy.masterSocket, "@1 show servers state be_app")).toContain("be_app");

    const master = haproxy.pid();
    await haproxy.kill();
    expect(isProcessAlive(master)).toBe(false);
    expect(isProcessAlive(worker)).toBe(false);
  });

  it("stop() ends master and worker", async () => {
    const haproxy = await start({ sections: templateBackend("be_app", { slots: 1 }), masterWorker: true });
    const master = haproxy.pid();
    const worker = infoPid(await haproxy.command("show info"));
    await haproxy.stop();
    expect(isProcessAlive(master)).toBe(false);
    expect(isProcessAlive(worker)).toBe(false);
  });
});
