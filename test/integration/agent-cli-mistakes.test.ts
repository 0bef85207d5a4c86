import { spawnSync } from "node:child_process";
import { copyFile, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { validityFor } from "../../controller/tls/cert-profiles.js";
import { initFleetCa, issueCertificate } from "../../controller/tls/fleet-ca.js";
import { runAgent, type CliResult } from "../support/cli.js";
import { until } from "../support/helpers.js";
import { AGENT_BIN, startNode } from "../support/processes.js";

// A user's mistakes with hafleet-agent, each answered by one line naming what is wrong and what to
// do, exit 2 (input) or 3 (this host), never a stack trace; and check-config refusing what a start
// would refuse: TLS files, the template, the state dir.

const STACK_FRAME = /^\s+at /m;
let dir: string;
let taken: Server;
let takenPort: number;
let tls: { ca: string; cert: string; key: string };

/** The result's stderr as lines, asserting there is no stack frame and no JSON log object among them. */
function lines(result: CliResult): string[] {
  expect(result.stderr).not.toMatch(STACK_FRAME);
  expect(result.stdout).not.toMatch(STACK_FRAME);
  const all = result.stderr.split("\n").filter((line) => line !== "");
  expect(all.filter((line) => line.startsWith("{"))).toEqual([]);
  return all;
}

/** One line on stderr, and the exit code. */
function oneLine(result: CliResult, code: number): string {
  const all = lines(result);
  expect(all, result.stderr).toHaveLength(1);
  expect(result.code, result.stderr).toBe(code);
  return all[0]!;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "hafleet-agent-mistakes-"));
  await writeFile(join(dir, "desired.json"), JSON.stringify({ backends: [] }));
  await writeFile(join(dir, "a-file"), "not a folder");
  taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
  takenPort = (taken.address() as { port: number }).port;
  await initFleetCa(join(dir, "fleet"), 30);
  const pair = await issueCertificate(join(dir, "fleet"), { kind: "agent", id: "edge-1" }, validityFor(30, Date.now()));
  tls = { ca: join(dir, "fleet", "ca.crt"), ...pair };
});

afterAll(async () => {
  taken?.close();
  await rm(dir, { recursive: true, force: true });
});

describe("hafleet-agent: one line per mistake, no stack trace", () => {
  it("apply --desired naming a missing file: exit 2, names the file", async () => {
    const missing = join(dir, "nope.json");
    const line = oneLine(await runAgent(["apply", "--socket", join(dir, "h.sock"), "--desired", missing]), 2);
    expect(line).toBe(`hafleet-agent apply: ${missing}: cannot read the desired-state file: no such file`);
  });

  it("apply --desired naming a folder: exit 2", async () => {
    const line = oneLine(await runAgent(["apply", "--socket", join(dir, "h.sock"), "--desired", dir]), 2);
    expect(line).toBe(`hafleet-agent apply: ${dir}: cannot read the desired-state file: is a folder, not a file`);
  });

  it("render --desired naming a folder: exit 2", async () => {
    const line = oneLine(await runAgent(["render", "--template", join(dir, "t.njk"), "--desired", dir, "--out", join(dir, "out.cfg")]), 2);
    expect(line).toBe(`hafleet-agent render: ${dir}: cannot read the desired-state file: is a folder, not a file`);
  });

  it("apply --state-dir below a file: exit 2 before HAProxy is touched", async () => {
    const stateDir = join(dir, "a-file", "state");
    const line = oneLine(await runAgent(["apply", "--socket", join(dir, "h.sock"), "--desired", join(dir, "desired.json"), "--state-dir", stateDir]), 2);
    expect(line).toBe(`hafleet-agent apply: --state-dir: ${join(dir, "a-file")} is not a folder, so ${stateDir} cannot be made`);
  });

  it("render --out below a file: exit 3, the file system's answer in one line", async () => {
    const template = join(dir, "t.njk");
    await writeFile(template, "# {{ backends | length }}\n");
    const out = join(dir, "a-file", "haproxy.cfg");
    const line = oneLine(await runAgent(["render", "--template", template, "--desired", join(dir, "desired.json"), "--out", out]), 3);
    expect(line).toBe(`hafleet-agent render: cannot open ${out}: a part of the path is not a folder (ENOTDIR)`);
  });

  it("says each flag once: no `--drain-period: --drain-period:`, no `apply: apply:`, no `--socket: socket:`", async () => {
    const desired = join(dir, "desired.json");
    expect(oneLine(await runAgent(["apply", "--socket", join(dir, "h.sock"), "--desired", desired, "--drain-period", "x"]), 2)).toBe(
      'hafleet-agent apply: --drain-period: must be a duration like 500ms, 5s or 2m (got "x")',
    );
    expect(oneLine(await runAgent(["apply", "--bogus"]), 2)).toMatch(/^hafleet-agent apply: Unknown option '--bogus'/);
    expect(oneLine(await runAgent(["apply", "--socket", "a:b:c", "--desired", desired]), 2)).toBe(
      'hafleet-agent apply: --socket: must be a unix socket path or HOST:PORT with a port in 1..65535 (got "a:b:c")',
    );
  });

  it("run with the metrics port taken: exit 3, names the address and what to do", async () => {
    const listen = `127.0.0.1:${takenPort}`;
    const result = await runAgent(["run", "--controller", "127.0.0.1:1", "--socket", join(dir, "h.sock"), "--state-dir", join(dir, "state-metrics"), "--metrics-listen", listen]);
    const line = lines(result).at(-1)!;
    expect(result.code).toBe(3);
    expect(line).toBe(`hafleet-agent run: cannot listen on ${listen}: address already in use: another process listens there (see 'ss -ltnp'); stop it or choose another --metrics-listen (metricsListen in a config file)`);
  });

  it("run flags: a controller off loopback is told --insecure, not `insecure: true`", async () => {
    const line = oneLine(await runAgent(["run", "--controller", "10.0.0.1:7900", "--socket", join(dir, "h.sock"), "--id", "a"]), 2);
    expect(line).toContain("--controller: needs --tls-ca, --tls-cert and --tls-key, or --insecure");
    expect(line).not.toContain("insecure: true");
  });

  it("run flags: a metrics port out of range is said once, as that (not as `not loopback`)", async () => {
    const line = oneLine(await runAgent(["run", "--controller", "127.0.0.1:7900", "--socket", join(dir, "h.sock"), "--metrics-listen", "127.0.0.1:80000"]), 2);
    expect(line).toBe('hafleet-agent run: --metrics-listen: must be HOST:PORT (IPv6 as [::1]:PORT) with a port in 0..65535 (got "127.0.0.1:80000")');
  });

  it("run --config naming a folder: exit 2, in words", async () => {
    const line = oneLine(await runAgent(["run", "--config", join(dir, "fleet")]), 2);
    expect(line).toMatch(/fleet: (cannot read the file: EISDIR: is a folder, not a file|a config file must be named)/);
  });

  it("run flags: only --tls-ca says which TLS flags are missing, not that one is empty", async () => {
    const line = oneLine(await runAgent(["run", "--controller", "127.0.0.1:7900", "--socket", join(dir, "h.sock"), "--tls-ca", tls.ca]), 2);
    expect(line).toBe("hafleet-agent run: --tls-cert: missing: --tls-ca, --tls-cert, --tls-key go together (--tls-ca given, --tls-cert and --tls-key not)");
  });

  it("run flags: TLS files that are not there refuse the start (exit 2), each named", async () => {
    const missing = join(dir, "missing");
    const line = oneLine(
      await runAgent(["run", "--controller", "127.0.0.1:7900", "--socket", join(dir, "h.sock"), "--state-dir", join(dir, "s"), "--tls-ca", tls.ca, "--tls-cert", `${missing}.crt`, "--tls-key", `${missing}.key`]),
      2,
    );
    expect(line).toBe(`hafleet-agent run: --tls-cert: ${missing}.crt: cannot be read (no such file); --tls-key: ${missing}.key: cannot be read (no such file)`);
  });

  it("run flags do not demand --id: the host name, as in a config file", async () => {
    const agent = startNode(AGENT_BIN, ["run", "--controller", "127.0.0.1:1", "--socket", join(dir, "h.sock"), "--state-dir", join(dir, "state-id")]);
    try {
      const line = await until(() => agent.logs("stored desired state loaded, applying it")[0], "the agent started");
      expect(line.agent).toBe(hostname());
    } finally {
      await agent.kill();
    }
  });

  it("ends quietly, with its own exit code, when the reader of its output is gone (| head)", () => {
    const piped = spawnSync("bash", ["-c", `"${process.execPath}" "${AGENT_BIN}" --help | true; echo "rc=\${PIPESTATUS[0]}"`], { encoding: "utf8" });
    expect(piped.stderr).toBe("");
    expect(piped.stdout).toBe("rc=0\n");
  });

  it("escapes control characters of what it quotes", async () => {
    const result = await runAgent(["no\u001b]0;owned\u0007such"]);
    expect(result.code).toBe(2);
    expect(result.stderr.split("\n")[0]).toBe("hafleet-agent: unknown command 'no\\x1b]0;owned\\x07such'");
  });
});

describe("hafleet-agent check-config: refuses what a start would refuse", () => {
  async function config(name: string, extra: Record<string, unknown>): Promise<string> {
    const file = join(dir, `${name}.json`);
    await writeFile(file, JSON.stringify({ controllers: ["127.0.0.1:7900"], sockets: ["/run/haproxy/admin.sock"], id: "edge-1", manage: ["be_app"], stateDir: join(dir, `state-${name}`), ...extra }));
    return file;
  }

  it("says ok with TLS files that are all there and right", async () => {
    const file = await config("good", { tls });
    const result = await runAgent(["check-config", file]);
    expect(lines(result)).toEqual([]);
    expect([result.code, result.stdout]).toEqual([0, `${file}: ok\n`]);
  });

  it("names each TLS file that is missing, one line each, exit 2", async () => {
    const file = await config("missing-tls", { tls: { ca: tls.ca, cert: join(dir, "none.crt"), key: join(dir, "none.key") } });
    const result = await runAgent(["check-config", file]);
    expect(result.code).toBe(2);
    expect(lines(result)).toEqual([`${file}: tls.cert: ${join(dir, "none.crt")}: cannot be read (no such file)`, `${file}: tls.key: ${join(dir, "none.key")}: cannot be read (no such file)`]);
    expect(result.stdout).toBe("");
  });

  it("--settings-only checks the settings alone, for a staged copy (Ansible's validate)", async () => {
    const file = await config("staged", { tls: { ca: tls.ca, cert: join(dir, "later.crt"), key: join(dir, "later.key") } });
    const result = await runAgent(["check-config", "--settings-only", file]);
    expect([result.code, result.stdout, lines(result)]).toEqual([0, `${file}: ok\n`, []]);
    const bad = await runAgent(["check-config", "--settings-only", await config("staged-bad", { controllers: ["ctl:99999"] })]);
    expect(bad.code).toBe(2);
  });

  it("refuses a CA file that holds no certificate, and a key of another certificate", async () => {
    const other = await issueCertificate(join(dir, "fleet"), { kind: "agent", id: "edge-2" }, validityFor(30, Date.now()));
    const notPem = join(dir, "not-a-ca.crt");
    await writeFile(notPem, "hello\n");
    const badCa = await runAgent(["check-config", await config("bad-ca", { tls: { ...tls, ca: notPem } })]);
    expect(badCa.code).toBe(2);
    expect(lines(badCa)).toEqual([expect.stringMatching(/tls\.ca: .*not-a-ca\.crt: holds no PEM certificate$/)]);
    const wrongKey = await runAgent(["check-config", await config("wrong-key", { tls: { ...tls, key: other.key } })]);
    expect(wrongKey.code).toBe(2);
    expect(lines(wrongKey)).toEqual([expect.stringMatching(/tls\.key: .*does not belong to/)]);
  });

  it("refuses a state dir that cannot be a folder", async () => {
    const file = await config("state", { stateDir: join(dir, "a-file", "state") });
    const result = await runAgent(["check-config", file]);
    expect(result.code).toBe(2);
    expect(lines(result)).toEqual([`${file}: stateDir: ${join(dir, "a-file")} is not a folder, so ${join(dir, "a-file", "state")} cannot be made`]);
  });

  it("refuses a hybrid template that is not there, with the rest", async () => {
    const template = join(dir, "none.njk");
    const file = await config("template", { hybrid: { configTemplate: template, configOut: join(dir, "haproxy.cfg"), stateFile: join(dir, "state"), masterSocket: join(dir, "master.sock") } });
    const result = await runAgent(["check-config", file]);
    expect(result.code).toBe(2);
    expect(lines(result)).toEqual([expect.stringContaining(`${file}: hybrid.configTemplate: ${template}: cannot read the template`)]);
  });

  it("run --config refuses the same file the same way", async () => {
    await mkdir(join(dir, "copy"), { recursive: true });
    const file = await config("run-missing-tls", { tls: { ca: tls.ca, cert: join(dir, "none.crt"), key: tls.key } });
    await copyFile(file, join(dir, "copy", "agent.json"));
    const line = oneLine(await runAgent(["run", "--config", file]), 2);
    expect(line).toBe(`hafleet-agent run: ${file}: tls.cert: ${join(dir, "none.crt")}: cannot be read (no such file)`);
  });

  it("escapes control characters a config file brings", async () => {
    const file = await config("hostile", { id: "edge\u009b2J" });
    const result = await runAgent(["check-config", file]);
    expect(result.code).toBe(2);
    expect(result.stderr).not.toMatch(/[\u001b\u009b]/);
    expect(result.stderr).toContain("\\x9b2J");
  });
});
