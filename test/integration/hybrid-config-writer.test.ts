import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { renderCommand } from "../../agent/cli/render-command.js";
import { InvalidInputError } from "../../agent/errors.js";
import { ConfigCheckError, ConfigRejectedError, CoalescingConfigWriter, writeConfig } from "../../agent/hybrid/config-writer.js";
import { compileTemplate, loadTemplate, type ConfigTemplate, type TemplateVars } from "../../agent/hybrid/render-config.js";
import { fromDesired, fromObserved, type RenderContext } from "../../agent/hybrid/render-model.js";
import { parseDesiredState } from "../../agent/model/desired-state.js";
import { adminMode } from "../../agent/reconcile/observed-state.js";
import { readObservedState } from "../../agent/reconcile/read-observed.js";
import { RuntimeClient } from "../../agent/runtime/runtime-client.js";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";
import { silentLogger } from "../support/apply.js";
import { freePort, isHaproxyInstalled, startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";

// Every verdict here is the real `haproxy -c`'s, and every "runs the same servers" is read
// from HAProxy's own `show servers state` through the harness's raw socket code.

const DEFAULT_TEMPLATE = fileURLToPath(new URL("../../deploy/hybrid/haproxy.cfg.njk", import.meta.url));

let template: ConfigTemplate;
let haproxy: RunningHaproxy | undefined;
const dirs: string[] = [];

beforeAll(async () => {
  expect(await isHaproxyInstalled(), "haproxy must be installed (apt-get install haproxy) or HAPROXY_BIN set").toBe(true);
  template = await loadTemplate(DEFAULT_TEMPLATE);
});

afterEach(async () => {
  vi.restoreAllMocks();
  await haproxy?.stop();
  haproxy = undefined;
  await Promise.all(dirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "hafleet-hybrid-"));
  dirs.push(dir);
  return dir;
}

/** Variables for a config that `haproxy -c` accepts and that starts on this machine. */
async function varsFor(dir: string, adminSocket = join(dir, "admin.sock")): Promise<TemplateVars> {
  return { adminSocket, stateFile: join(dir, "server-state"), bind: `127.0.0.1:${await freePort()}`, maxconn: "1000", nbthread: "1" };
}

const desired = parseDesiredState(
  {
    backends: [
      { name: "be_app", servers: [{ address: "127.0.0.12", port: 9002, weight: 20 }, { address: "127.0.0.11", port: 9001 }] },
      { name: "be_api", servers: [{ address: "::1", port: 9100 }] },
    ],
  },
  "test",
);

function contextWithWeight(weight: number): RenderContext {
  return fromDesired(parseDesiredState({ backends: [{ name: "be_app", servers: [{ address: "127.0.0.1", port: 9000, weight }] }] }, "test"), { spareSlots: 2 });
}

async function filesIn(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}

describe("writeConfig with the real haproxy -c", () => {
  it("writes a valid render, keeps the old file as .bak with its mode, and leaves no temp file", async () => {
    const dir = await tempDir();
    const file = join(dir, "haproxy.cfg");
    await writeFile(file, "# the operator's previous file\n");
    await chmod(file, 0o640);
    const text = template.render(fromDesired(desired, { spareSlots: 2 }), await varsFor(dir));

    const result = await writeConfig(file, text);
    expect(result.changed).toBe(true);
    expect(result.backup).toBe(`${file}.bak`);
    // Whatever HAProxy warns about here depends on its version (2.6 warns of the state file that
    // hafleet writes only before a reload, 2.9+ only notes it, 3.0+ prints nothing): only the form is checked.
    for (const warning of result.warnings) {
      expect(warning).toMatch(/^\[WARNING\]/);
      expect(warning).not.toMatch(/\.tmp/);
    }
    expect(await readFile(file, "utf8")).toBe(text);
    expect(await readFile(`${file}.bak`, "utf8")).toBe("# the operator's previous file\n");
    expect((await stat(file)).mode & 0o777).toBe(0o640);
    expect(await filesIn(dir)).toEqual(["haproxy.cfg", "haproxy.cfg.bak"]);

    const next = template.render(fromDesired(desired, { spareSlots: 3 }), await varsFor(dir));
    expect((await writeConfig(file, next)).changed).toBe(true);
    expect(await readFile(`${file}.bak`, "utf8")).toBe(text);
    expect(await readFile(file, "utf8")).toBe(next);
  });

  it("passes HAProxy's warnings on, each with its continuation lines, on every version", async () => {
    const dir = await tempDir();
    const file = join(dir, "haproxy.cfg");
    // No timeouts: a warning that 2.6 to 3.4 all print, in the same words.
    const text = `global\n    stats socket ${join(dir, "admin.sock")} mode 600 level admin\ndefaults\n    mode http\nbackend be_app\n    server s1 127.0.0.1:9001\n`;
    const result = await writeConfig(file, text);
    expect(result.changed).toBe(true);
    const warning = result.warnings.find((entry) => entry.includes("missing timeouts for backend 'be_app'"));
    expect(warning, result.warnings.join("\n")).toMatch(/^\[WARNING\] +\(\d+\) : (config : )?missing timeouts for backend 'be_app'\.\n +\| While not properly invalid/);
    expect(await readFile(file, "utf8")).toBe(text);
  });

  it("refuses a template with an unknown keyword with HAProxy's own alert naming the target file and line; the old file stays byte for byte", async () => {
    const dir = await tempDir();
    const file = join(dir, "haproxy.cfg");
    const old = Buffer.from("# old\r\n\u00e9 bytes kept exactly\n", "utf8");
    await writeFile(file, old);
    const source = (await readFile(DEFAULT_TEMPLATE, "utf8")).replace("    balance {{", "    frobnicate on\n    balance {{");
    const text = compileTemplate(source, join(dir, "bad.njk")).render(fromDesired(desired, { spareSlots: 1 }), await varsFor(dir));
    const line = text.split("\n").indexOf("    frobnicate on") + 1;

    const error = (await writeConfig(file, text).catch((e: unknown) => e)) as ConfigRejectedError;
    expect(error).toBeInstanceOf(ConfigRejectedError);
    expect(error.code).toBe("HAFLEET_CONFIG_REJECTED");
    expect(error.alerts[0]).toMatch(new RegExp(`^\\[ALERT\\] +\\(\\d+\\) : config : parsing \\[${escape(file)}:${line}\\] : unknown keyword 'frobnicate' in 'backend' section`));
    expect(error.message).toContain(error.alerts[0]);
    expect(error.message).not.toMatch(/\.tmp/);
    expect(await readFile(file)).toEqual(old);
    expect(await filesIn(dir)).toEqual(["haproxy.cfg"]);
  });

  it("refuses a state that clashes with the template (a backend the template also declares)", async () => {
    const dir = await tempDir();
    const file = join(dir, "haproxy.cfg");
    const good = template.render(fromDesired(desired, { spareSlots: 1 }), await varsFor(dir));
    await writeConfig(file, good);
    const source = `${await readFile(DEFAULT_TEMPLATE, "utf8")}\nbackend be_app\n    server fixed 127.0.0.1:80\n`;
    const text = compileTemplate(source, join(dir, "clash.njk")).render(fromDesired(desired, { spareSlots: 1 }), await varsFor(dir));

    const error = (await writeConfig(file, text).catch((e: unknown) => e)) as ConfigRejectedError;
    expect(error).toBeInstanceOf(ConfigRejectedError);
    expect(error.alerts.join("\n")).toContain("backend 'be_app' has the same name as backend 'be_app' declared at");
    expect(await readFile(file, "utf8")).toBe(good);
    expect(await filesIn(dir)).toEqual(["haproxy.cfg"]);
  });

  it("refuses a file HAProxy finds valid but would not start (exit 2, no [ALERT] line): its words are the reason", async () => {
    const dir = await tempDir();
    const file = join(dir, "haproxy.cfg");
    const text = compileTemplate("defaults\n    mode http\n    timeout client 1s\n    timeout server 1s\n    timeout connect 1s\n", join(dir, "t.njk")).render({ backends: [] });
    const error = (await writeConfig(file, text).catch((e: unknown) => e)) as ConfigRejectedError;
    expect(error).toBeInstanceOf(ConfigRejectedError);
    expect(error.alerts).toEqual(["Configuration file has no error but will not start (no listener) => exit(2)."]);
    expect(await filesIn(dir)).toEqual([]);
  });

  it("writes and validates nothing for an identical render (not even the haproxy binary is run)", async () => {
    const dir = await tempDir();
    const file = join(dir, "haproxy.cfg");
    const text = template.render(fromDesired(desired, { spareSlots: 2 }), await varsFor(dir));
    expect((await writeConfig(file, text)).backup).toBeNull();
    const before = await stat(file);

    const again = await writeConfig(file, text, { haproxyBin: "/nonexistent/haproxy" });
    expect(again).toEqual({ file, changed: false, backup: null, warnings: [] });
    const after = await stat(file);
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);
    expect(await filesIn(dir)).toEqual(["haproxy.cfg"]);

    // A change with no haproxy to check it is refused too: no verdict, no write.
    const changed = await writeConfig(file, `${text}# changed\n`, { haproxyBin: "/nonexistent/haproxy" }).catch((e: unknown) => e);
    expect(changed).toBeInstanceOf(ConfigCheckError);
    expect((changed as Error).message).toContain('cannot run "/nonexistent/haproxy"');
    expect(await readFile(file, "utf8")).toBe(text);
    expect(await filesIn(dir)).toEqual(["haproxy.cfg"]);
  });
});

describe("CoalescingConfigWriter with the real haproxy -c", () => {
  it("writes once for a burst of 1,000 changes, the last one", async () => {
    const dir = await tempDir();
    const file = join(dir, "haproxy.cfg");
    const vars = await varsFor(dir);
    const writer = new CoalescingConfigWriter({ file, intervalMs: 300, render: (context) => template.render(context, vars), logger: silentLogger });
    try {
      for (let n = 0; n < 1_000; n++) writer.request(contextWithWeight(n % 257));
      const deadline = Date.now() + 10_000;
      while (writer.stats().attempts === 0 && Date.now() < deadline) await sleep(20);
      await sleep(800); // more than two intervals: a second write would have happened by now
      expect(writer.stats()).toEqual({ requests: 1_000, attempts: 1, written: 1, unchanged: 0, failed: 0 });
      expect(await readFile(file, "utf8")).toBe(template.render(contextWithWeight(999 % 257), vars));
      expect(writer.dirty).toBe(false);
    } finally {
      await writer.close();
    }
  });
});

/** `backend/server -> addr:port w=W mode`, from HAProxy's own `show servers state`. */
function view(rows: ReadonlyArray<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(rows.map((row) => [`${row.be_name}/${row.srv_name}`, `${row.srv_addr}:${row.srv_port} w=${row.srv_uweight} ${adminMode(Number(row.srv_admin_state))}`]));
}

async function runtime(h: RunningHaproxy, command: string, expected: RegExp): Promise<void> {
  const reply = await h.command(command);
  expect(reply, command).toMatch(expected);
}

describe("hybrid round trip on a real HAProxy in master-worker mode", () => {
  it("a restart from the file rendered by fromObserved runs the same servers: names, addresses, ports, weights", async () => {
    const h = (haproxy = await startHaproxy({
      masterWorker: true,
      sections: [templateBackend("be_app", { slots: 4, weight: 10, check: true }), templateBackend("be_static", { slots: 2, balance: "static-rr", check: true })].join("\n"),
    }));
    // Runtime changes of every kind hafleet makes; none of them is in the harness's config.
    const EMPTY = /^\s*$/;
    await runtime(h, "set server be_app/srv1 addr 127.0.0.11 port 9011", /IP changed from '0.0.0.0' to '127.0.0.11'/);
    await runtime(h, "set server be_app/srv1 state ready", EMPTY);
    await runtime(h, "set server be_app/srv2 addr 127.0.0.12 port 9012", /IP changed/);
    await runtime(h, "set server be_app/srv2 weight 22", EMPTY);
    await runtime(h, "set server be_app/srv2 state ready", EMPTY);
    await runtime(h, "set server be_app/srv2 state drain", EMPTY);
    await runtime(h, "set server be_app/srv3 addr ::1 port 9013", /IP changed/);
    await runtime(h, "set server be_app/srv3 weight 33", EMPTY);
    await runtime(h, "set server be_app/srv3 state ready", EMPTY);
    await runtime(h, "set server be_app/srv4 addr 127.0.0.14 port 9014", /IP changed/);
    await runtime(h, "add server be_app/hafleet-127.0.0.40-9040 127.0.0.40:9040 weight 40 check", /New server registered/);
    await runtime(h, "enable health be_app/hafleet-127.0.0.40-9040", EMPTY);
    await runtime(h, "set server be_app/hafleet-127.0.0.40-9040 state ready", EMPTY);
    await runtime(h, "add server be_app/hafleet-127.0.0.41-9041 127.0.0.41:9041", /New server registered/);
    await runtime(h, "set server be_static/srv1 addr 127.0.0.21 port 9021", /IP changed/);
    await runtime(h, "set server be_static/srv1 state ready", EMPTY);

    const before = view(await h.serversState());
    expect(before).toEqual({
      "be_app/srv1": "127.0.0.11:9011 w=10 ready",
      "be_app/srv2": "127.0.0.12:9012 w=22 drain",
      "be_app/srv3": "::1:9013 w=33 ready",
      "be_app/srv4": "127.0.0.14:9014 w=10 maint",
      "be_app/hafleet-127.0.0.40-9040": "127.0.0.40:9040 w=40 ready",
      "be_app/hafleet-127.0.0.41-9041": "127.0.0.41:9041 w=1 maint",
      "be_static/srv1": "127.0.0.21:9021 w=1 ready",
      "be_static/srv2": "0.0.0.0:80 w=1 maint",
    });

    const vars = await varsFor(h.dir, h.socket);
    const text = template.render(fromObserved(await observe(h), { spareSlots: 2 }), vars);
    const written = await writeConfig(h.configPath, text);
    expect(written.changed).toBe(true);
    expect(written.backup).toBe(`${h.configPath}.bak`);

    // No state file exists: everything the new process runs comes from the rendered file.
    await h.restart();
    const after = view(await h.serversState());
    expect(after).toEqual({
      ...before,
      // A drain is not a config-line state; the server-state file carries it across a reload.
      "be_app/srv2": "127.0.0.12:9012 w=22 ready",
      // Spares so that two free slots exist: srv4 (maintenance) is one, srv5 the other.
      "be_app/srv5": "0.0.0.0:80 w=10 maint",
      "be_static/srv3": "0.0.0.0:80 w=1 maint",
    });
    const running = await observe(h);
    expect(running.get("be_static")?.algorithm).toBe("static-rr");
    expect(running.get("be_app")?.algorithm).toBe("roundrobin");
    expect((await h.command("show proc")).length).toBeGreaterThan(0);

    // What now runs renders to the very same bytes: no write, no reload for nothing.
    const again = template.render(fromObserved(running, { spareSlots: 2 }), vars);
    expect(again).toBe(text);
    expect((await writeConfig(h.configPath, again)).changed).toBe(false);
  }, 30_000);
});

async function observe(h: RunningHaproxy) {
  const client = new RuntimeClient(parseSocketAddress(h.socket));
  try {
    return await readObservedState(client);
  } finally {
    client.close();
  }
}

describe("hafleet-agent render", () => {
  /** Runs the command in-process; stdout and stderr captured. */
  async function render(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    let stdout = "";
    let stderr = "";
    vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => ((stdout += String(chunk)), true));
    vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => ((stderr += String(chunk)), true));
    try {
      const code = await renderCommand(args, silentLogger);
      return { code, stdout, stderr };
    } finally {
      vi.restoreAllMocks();
    }
  }

  async function desiredFile(dir: string): Promise<string> {
    const path = join(dir, "desired.json");
    await writeFile(path, JSON.stringify({ backends: desired.backends }));
    return path;
  }

  it("renders a desired state that a real HAProxy in master-worker mode then runs", async () => {
    const h = (haproxy = await startHaproxy({ masterWorker: true, sections: templateBackend("be_placeholder", { slots: 1 }) }));
    const vars = await varsFor(h.dir, h.socket);
    const varArgs = Object.entries(vars).flatMap(([key, value]) => ["--var", `${key}=${value}`]);
    const args = ["--template", DEFAULT_TEMPLATE, "--desired", await desiredFile(h.dir), "--out", h.configPath, "--check", "--spare-slots", "2", "--default-weight", "10", ...varArgs];

    const first = await render(args);
    expect(first).toMatchObject({ code: 0, stdout: `${h.configPath}: written (2 backend(s), 7 server line(s) including spare slots)\n` });
    // HAProxy's warnings, if its version prints any for this file (2.6 does, 3.0+ not): nothing else.
    expect(first.stderr.split("\n").filter((line) => line !== "" && !line.startsWith("[WARNING]") && !/^\s+\|/.test(line))).toEqual([]);
    expect((await render(args)).stdout).toBe(`${h.configPath}: unchanged (2 backend(s), 7 server line(s) including spare slots)\n`);

    await h.restart();
    expect(view(await h.serversState())).toEqual({
      "be_api/srv1": "::1:9100 w=10 ready",
      "be_api/srv2": "0.0.0.0:80 w=10 maint",
      "be_api/srv3": "0.0.0.0:80 w=10 maint",
      "be_app/srv1": "127.0.0.11:9001 w=10 ready",
      "be_app/srv2": "127.0.0.12:9002 w=20 ready",
      "be_app/srv3": "0.0.0.0:80 w=10 maint",
      "be_app/srv4": "0.0.0.0:80 w=10 maint",
    });
  }, 30_000);

  it("--check refuses what HAProxy refuses: exit 2, HAProxy's alert on stderr, the old file kept", async () => {
    const dir = await tempDir();
    const out = join(dir, "haproxy.cfg");
    await writeFile(out, "# old\n");
    const bad = join(dir, "bad.njk");
    await writeFile(bad, (await readFile(DEFAULT_TEMPLATE, "utf8")).replace("    mode http", "    mode http\n    timeout frobnicate 5s"));
    const vars = Object.entries(await varsFor(dir)).flatMap(([key, value]) => ["--var", `${key}=${value}`]);

    const result = await render(["--template", bad, "--desired", await desiredFile(dir), "--out", out, "--check", ...vars]);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe("");
    expect(result.stderr).toMatch(new RegExp(`\\[ALERT\\] +\\(\\d+\\) : config : parsing \\[${escape(out)}:\\d+\\] : 'timeout'`));
    expect(result.stderr).toContain(`${out} was left as it was.`);
    expect(await readFile(out, "utf8")).toBe("# old\n");
    expect(await filesIn(dir)).toEqual(["bad.njk", "desired.json", "haproxy.cfg"]);
  });

  it("reports an undefined template variable as invalid input naming the template and line", async () => {
    const dir = await tempDir();
    const path = join(dir, "t.njk");
    await writeFile(path, "global\n    stats socket {{ adminSockt }}\n");
    const error = (await renderCommand(["--template", path, "--desired", await desiredFile(dir), "--out", join(dir, "out.cfg")], silentLogger).catch((e: unknown) => e)) as InvalidInputError;
    expect(error).toBeInstanceOf(InvalidInputError);
    expect(error.message).toBe(`${path}: line 2, column 18: attempted to output null or undefined value in: stats socket {{ adminSockt }}`);
    expect(await filesIn(dir)).toEqual(["desired.json", "t.njk"]);
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
