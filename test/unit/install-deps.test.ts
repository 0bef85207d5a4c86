import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

// deploy/install-deps.sh on a machine with nothing installed, simulated: a PATH of stubs where
// apt-get and npm only write down what they were asked. The demo gets HAProxy and the npm
// dependencies; the tests get Ansible and Chromium besides.

const SCRIPT = new URL("../../deploy/install-deps.sh", import.meta.url).pathname;
let bin: string;
let calls: string;

function stub(name: string, body: string): void {
  writeFileSync(join(bin, name), `#!/bin/sh\n${body}\n`);
  chmodSync(join(bin, name), 0o755);
}

function install(...args: string[]): { code: number | null; stderr: string; calls: string[] } {
  writeFileSync(calls, "");
  const result = spawnSync("/bin/bash", [SCRIPT, ...args], { env: { PATH: bin, HOME: tmpdir() }, encoding: "utf8" });
  return { code: result.status, stderr: result.stderr, calls: readFileSync(calls, "utf8").split("\n").filter((line) => line !== "") };
}

beforeAll(() => {
  bin = mkdtempSync(join(tmpdir(), "hafleet-install-deps-"));
  calls = join(bin, "calls.log");
  for (const tool of ["dirname", "awk", "sed", "cat", "mkdir", "rm", "mktemp", "chmod"]) symlinkSync(`/usr/bin/${tool}`, join(bin, tool));
  stub("apt-get", `echo "apt-get $*" >> ${calls}`);
  stub("apt-cache", `echo "apt-cache $*" >> ${calls}`);
  stub("npm", `echo "npm $*" >> ${calls}`);
  stub("node", "echo v20.0.0");
});

afterAll(() => rmSync(bin, { recursive: true, force: true }));

describe("deploy/install-deps.sh", () => {
  it("--for demo installs HAProxy only, of Debian's packages, and stops there", () => {
    const result = install("--for", "demo");
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toContain("installing haproxy (Debian packages)");
    expect(result.calls.filter((call) => call.startsWith("apt-get install"))).toEqual(["apt-get install -y -qq haproxy"]);
    expect(result.calls.some((call) => call.startsWith("apt-cache") || call.includes("download"))).toBe(false);
  });

  it("--for tests (the default) installs Ansible besides, for the tests", () => {
    for (const args of [["--for", "tests"], []]) {
      const result = install(...args);
      const installs = result.calls.filter((call) => call.startsWith("apt-get install"));
      expect(installs[0]).toMatch(/^apt-get install -y -qq haproxy ansible-core/);
    }
  });

  it("refuses an unknown purpose, exit 2", () => {
    const result = install("--for", "prod");
    expect(result.code).toBe(2);
    expect(result.stderr).toBe("install-deps: --for takes demo or tests, not 'prod'\n");
    expect(result.calls).toEqual([]);
  });
});
