import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { connect } from "node:net";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { isProcessAlive } from "../support/haproxy.js";

/*
 * The README's first command, `bash deploy/demo/demo.sh`, in its CI form: real HAProxy,
 * controller, agent and load, run to its summary; then nothing it started may be left.
 * `npm test` has built already, hence HAFLEET_DEMO_SKIP_INSTALL.
 */

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const DEMO_TIMEOUT_MS = 120_000;

interface Finished {
  code: number | null;
  output: string;
}

/** Runs the demo; `onOutput` sees the output so far and may signal the demo's pid. */
function runDemo(args: string[], onOutput: (output: string, pid: number) => void = () => {}): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", ["deploy/demo/demo.sh", ...args], { cwd: ROOT, env: { ...process.env, HAFLEET_DEMO_SKIP_INSTALL: "1" }, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    const append = (chunk: string): void => {
      output += chunk;
      onOutput(output, child.pid!);
    };
    child.stdout.setEncoding("utf8").on("data", append);
    child.stderr.setEncoding("utf8").on("data", append);
    const timer = setTimeout(() => child.kill("SIGTERM"), DEMO_TIMEOUT_MS - 10_000);
    child.once("error", reject);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

/** What the demo's header says it started: pids (HAProxy's worker too), loopback ports, its temp dir. */
function started(output: string): { pids: number[]; ports: number[]; dir: string } {
  const header = output.slice(0, output.indexOf("\n== "));
  const pids = [...header.matchAll(/\b(?:pid|worker) (\d+)/g)].map((match) => Number(match[1]));
  const ports = [...header.matchAll(/:(\d+)\b/g)].map((match) => Number(match[1]));
  const dir = /logs\s+(\S+)\/\{/.exec(header)?.[1] ?? "";
  return { pids, ports, dir };
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

async function expectNothingLeft(output: string): Promise<void> {
  const { pids, ports, dir } = started(output);
  // HAProxy master and worker, upstreams, controller, agent; 6 upstream ports, frontend, gRPC, status.
  expect(pids).toHaveLength(5);
  expect(ports.length).toBe(9);
  expect(pids.filter(isProcessAlive)).toEqual([]);
  expect((await Promise.all(ports.map(listening))).some(Boolean)).toBe(false);
  expect(dir).toMatch(/hafleet-demo\./);
  expect(existsSync(dir)).toBe(false);
}

describe("the one-command demo", () => {
  it("scales HAProxy under load with no failed request and no reload, then stops all it started", { timeout: DEMO_TIMEOUT_MS }, async () => {
    const { code, output } = await runDemo(["--short"]);
    expect(output).toContain("result: OK");
    expect(code).toBe(0);
    expect(output).toMatch(/^ {3}changes applied: 4,/m);
    expect(output).toMatch(/^ {3}reloads: 0 /m);
    expect(output).toMatch(/^ {3}failed requests: 0$/m);
    expect(output).toMatch(/^ {3}requests: [\d,]+ sent through HAProxy, [\d,]+ served$/m);
    expect(output).toContain('controller: dropped web[3]: address: must be an IPv4 or IPv6 literal (got "10.0.0.1;shutdown sessions")');
    expect(output).toMatch(/controller: held be_app after [\d.]+ s: would drop all 3 servers/);
    expect(output).toMatch(/^t\+\d+s +catalog=6 {2}haproxy=6 \(srv1\.\.4 \+ 2 added\) {2}agent=in-sync/m);
    await expectNothingLeft(output);
  });

  it("stops everything it started on Ctrl-C", { timeout: DEMO_TIMEOUT_MS }, async () => {
    let interrupted = false;
    const { code, output } = await runDemo(["--short"], (text, pid) => {
      if (interrupted || !text.includes("load started")) return;
      interrupted = true;
      process.kill(pid, "SIGINT");
    });
    expect(output).toContain("SIGINT: stopping everything the demo started");
    expect(output).not.toContain("== summary");
    expect(code).toBe(130);
    await expectNothingLeft(output);
  });
});
