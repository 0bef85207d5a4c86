import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadAgentConfig } from "../../agent/config/load-agent-config.js";
import { serving } from "../support/apply.js";
import { freePort, parseServersState } from "../support/haproxy.js";
import { sendRaw } from "../support/raw-socket.js";

/*
 * The Debian packages (npm run package), deploy/install.sh and the Ansible role, installed for
 * real on this machine, as root, and removed again: whatever a test does, afterAll purges.
 */

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const VERSION = (JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
const AGENT_DEB = join(ROOT, `dist/packages/hafleet-agent_${VERSION}_all.deb`);
const CONTROLLER_DEB = join(ROOT, `dist/packages/hafleet-controller_${VERSION}_all.deb`);
const ROLE_CACHE = "/var/cache/hafleet";

/** What the packages or install.sh may leave on the machine; each must be gone after a purge. */
const LEFTOVERS = [
  "/etc/hafleet",
  "/var/lib/hafleet",
  "/var/lib/hafleet-controller",
  "/usr/lib/hafleet",
  "/usr/bin/hafleet-agent",
  "/usr/bin/hafleet",
  "/lib/systemd/system/hafleet-agent.service",
  "/lib/systemd/system/hafleet-controller.service",
  "/usr/share/doc/hafleet-agent",
  "/usr/share/doc/hafleet-controller",
  "/usr/local/lib/hafleet",
  "/usr/local/bin/hafleet-agent",
  "/usr/local/bin/hafleet",
  "/etc/systemd/system/hafleet-agent.service",
  "/etc/systemd/system/hafleet-controller.service",
];
const USERS = ["hafleet-agent", "hafleet-controller"];

function run(command: string, args: string[], options: { cwd?: string } = {}): SpawnSyncReturns<string> {
  return spawnSync(command, args, { encoding: "utf8", timeout: 120_000, cwd: options.cwd ?? ROOT });
}

/** Runs a command that must succeed; its stdout. */
function ok(command: string, ...args: string[]): string {
  const result = run(command, args);
  if (result.status !== 0) throw new Error(`${command} ${args.join(" ")} exited ${result.status ?? result.signal}:\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

function installed(pkg: string): boolean {
  return run("dpkg-query", ["--show", "--showformat=${Status}", pkg]).stdout.endsWith(" installed");
}

function leftovers(): string[] {
  const paths = LEFTOVERS.filter((path) => existsSync(path));
  const accounts = USERS.flatMap((name) => [
    ...(run("getent", ["passwd", name]).status === 0 ? [`user ${name}`] : []),
    ...(run("getent", ["group", name]).status === 0 ? [`group ${name}`] : []),
  ]);
  return [...paths, ...accounts];
}

/*
 * systemd as PID 1 of namespaces of its own: a /run of its own, with Debian's HAProxy socket
 * (/run/haproxy, group haproxy, mode 660) and the units (no default dependencies, each logging
 * to a file there), and its cgroups in subtrees of this process's, removed afterwards.
 */
const CGROUPS = `while IFS=: read -r _ controllers path; do
  dir=/sys/fs/cgroup/\${controllers#name=}; [ -z "$controllers" ] && dir=/sys/fs/cgroup/unified
  [ -d "$dir$path" ] && echo "$dir$path/hafleet-test"
done < /proc/self/cgroup`;
const BOOT = [
  `for cgroup in $(${CGROUPS}); do mkdir -p $cgroup && echo $$ > $cgroup/cgroup.procs; done`,
  "exec unshare --cgroup --pid --fork --mount --mount-proc sh -c '" +
    [
      // Mounted in its cgroup namespace, hierarchies start at the subtrees: systemd sees no further.
      // It mounts the controllers' own.
      "mount -t tmpfs cgroups /sys/fs/cgroup && mkdir /sys/fs/cgroup/systemd /sys/fs/cgroup/unified",
      "mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd && mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified",
      "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system /run/haproxy && chgrp haproxy /run/haproxy",
      "printf \"global\\n stats socket /run/haproxy/admin.sock mode 660 level admin group haproxy\\nbackend be_app\\n server-template srv 1-2 0.0.0.0:80 disabled\\n\" > /run/haproxy.cfg",
      "haproxy -D -f /run/haproxy.cfg",
      "printf \"[Unit]\\nWants=hafleet-agent.service hafleet-controller.service\\n\" > /run/systemd/system/hafleet-test.target",
      "for unit in hafleet-agent hafleet-controller; do mkdir /run/systemd/system/$unit.service.d; " +
        "printf \"[Unit]\\nDefaultDependencies=no\\n[Service]\\nStandardOutput=append:/run/%s.log\\nStandardError=append:/run/%s.log\\n\" $unit $unit > /run/systemd/system/$unit.service.d/test.conf; done",
      "exec env container=hafleet-test /lib/systemd/systemd --unit=hafleet-test.target",
    ].join(" && ") +
    "'",
].join(" && ");

/** Boots it; its PID, as this (the outer) PID namespace sees it. */
async function bootSystemd(): Promise<number> {
  const outer = spawn("sh", ["-c", BOOT], { stdio: "ignore" });
  systemd = { outer, pid: null };
  const pid = await until(() => Number(run("pgrep", ["--parent", String(outer.pid), "--exact", "systemd"]).stdout) || null, "systemd started");
  systemd.pid = pid;
  return pid;
}

/** Killing its PID 1 ends a PID namespace, and every process in it. */
async function stopSystemd(): Promise<void> {
  if (systemd === null) return;
  const { outer, pid } = systemd;
  systemd = null;
  const exited = new Promise((resolve) => (outer.exitCode !== null || outer.signalCode !== null ? resolve(null) : outer.once("exit", resolve)));
  if (pid !== null) process.kill(pid, "SIGKILL");
  else outer.kill("SIGKILL");
  await exited;
  for (const cgroup of ok("sh", "-c", CGROUPS).split("\n").filter(Boolean)) {
    if (existsSync(cgroup)) ok("find", cgroup, "-depth", "-type", "d", "-exec", "rmdir", "{}", "+");
  }
}

/** Polls `probe` until it gives something other than false or null; fails naming what it waited for. */
async function until<T>(probe: () => T | Promise<T>, what: string): Promise<Exclude<T, false | null>> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const value = await probe();
    if (value !== false && value !== null) return value as Exclude<T, false | null>;
    if (Date.now() > deadline) throw new Error(`${what}: not seen`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function purgeEverything(): void {
  for (const pkg of ["hafleet-agent", "hafleet-controller"]) if (installed(pkg)) ok("dpkg", "--purge", pkg);
  if (existsSync("/usr/local/lib/hafleet/agent")) ok("bash", "deploy/install.sh", "--purge");
  if (existsSync("/usr/local/lib/hafleet/controller")) ok("bash", "deploy/install.sh", "--controller", "--purge");
}

function owner(path: string): string {
  const stat = statSync(path);
  const name = (id: number, db: "passwd" | "group") => run("getent", [db, String(id)]).stdout.split(":")[0];
  return `${name(stat.uid, "passwd")}:${name(stat.gid, "group")} ${(stat.mode & 0o7777).toString(8)}`;
}

let work = "";
let systemd: { outer: ChildProcess; pid: number | null } | null = null;

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error("the package tests install packages and create users: run them as root (CI does)");
  for (const tool of ["dpkg-deb", "systemd-analyze", "runuser", "ansible-playbook"]) {
    if (run("sh", ["-c", `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is missing: run bash deploy/install-deps.sh`);
  }
  if (run("getent", ["group", "haproxy"]).status !== 0) throw new Error("no haproxy group (HAProxy not installed): run bash deploy/install-deps.sh");
  purgeEverything();
  expect(leftovers(), "hafleet is installed on this machine already: purge it first").toEqual([]);
  ok("npm", "run", "--silent", "package");
  work = await mkdtemp(join(tmpdir(), "hafleet-package-"));
}, 180_000);

afterAll(async () => {
  await stopSystemd();
  purgeEverything();
  await rm(ROLE_CACHE, { recursive: true, force: true });
  if (work !== "") await rm(work, { recursive: true, force: true });
}, 60_000);

describe("the Debian packages", () => {
  it("install the bundles, wrappers, units, conffiles, users and state dirs", () => {
    ok("dpkg", "--install", AGENT_DEB, CONTROLLER_DEB);
    for (const path of ["/usr/lib/hafleet/agent/hafleet-agent.mjs", "/usr/lib/hafleet/agent/hafleet.proto", "/usr/lib/hafleet/controller/hafleet.mjs", "/usr/lib/hafleet/controller/hafleet.proto"]) {
      expect(owner(path), path).toBe("root:root 644");
    }
    expect(owner("/usr/bin/hafleet-agent")).toBe("root:root 755");
    expect(owner("/etc/hafleet/agent.yaml")).toBe("root:hafleet-agent 640");
    expect(owner("/etc/hafleet/controller.yaml")).toBe("root:hafleet-controller 640");
    expect(owner("/var/lib/hafleet")).toBe("hafleet-agent:hafleet-agent 750");
    expect(owner("/var/lib/hafleet-controller")).toBe("hafleet-controller:hafleet-controller 750");
    // The agent's user reaches HAProxy's admin socket through the haproxy group, and has nothing more.
    expect(ok("id", "--name", "--groups", "hafleet-agent").trim().split(" ").sort()).toEqual(["hafleet-agent", "haproxy"]);
    expect(ok("id", "--name", "--groups", "hafleet-controller").trim()).toBe("hafleet-controller");
    expect(ok("getent", "passwd", "hafleet-agent")).toMatch(/:\/var\/lib\/hafleet:\/usr\/sbin\/nologin\n$/);
    expect(ok("dpkg-query", "--show", "--showformat=${Conffiles}", "hafleet-agent")).toContain("/etc/hafleet/agent.yaml");
    expect(ok("dpkg-query", "--show", "--showformat=${Depends}", "hafleet-agent")).toBe("nodejs (>= 18.20), passwd");
  });

  it("pass systemd-analyze verify, installed", () => {
    const result = run("systemd-analyze", ["verify", "hafleet-agent.service", "hafleet-controller.service"], { cwd: "/lib/systemd/system" });
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
  });

  it("run --version and check-config as their users", async () => {
    expect(ok("hafleet-agent", "--version")).toBe(`hafleet-agent ${VERSION}\n`);
    expect(ok("hafleet", "--version")).toBe(`hafleet ${VERSION}\n`);
    expect(ok("runuser", "-u", "hafleet-agent", "--", "hafleet-agent", "check-config", "/etc/hafleet/agent.yaml")).toBe("/etc/hafleet/agent.yaml: ok\n");
    expect(ok("runuser", "-u", "hafleet-controller", "--", "hafleet", "controller", "--check-config", "/etc/hafleet/controller.yaml")).toBe("/etc/hafleet/controller.yaml: ok\n");
    // One service's user cannot read the other's configuration.
    const foreign = run("runuser", ["-u", "hafleet-agent", "--", "hafleet", "controller", "--check-config", "/etc/hafleet/controller.yaml"]);
    expect([foreign.status, foreign.stderr]).toEqual([2, expect.stringContaining("EACCES")]);
    const bad = join(work, "bad.yaml");
    await writeFile(bad, "controllers: [ctl:7900]\nsockets: [/run/haproxy/admin.sock]\nresync: soon\nextra: 1\n");
    const refused = run("hafleet-agent", ["check-config", bad]);
    expect(refused.status).toBe(2);
    expect(refused.stderr.trim().split("\n")).toEqual([
      `${bad}: resync: line 3:9: must be a duration: milliseconds, or a string like 500ms, 5s or 2m (got "soon")`,
      `${bad}: extra: line 4:1: unknown field`,
    ]);
  });

  it("keep an edited conffile when installed again", async () => {
    const edited = (await readFile("/etc/hafleet/agent.yaml", "utf8")).replace("drainPeriod: 5s", "drainPeriod: 2s");
    await writeFile("/etc/hafleet/agent.yaml", edited);
    ok("dpkg", "--install", AGENT_DEB);
    expect(await readFile("/etc/hafleet/agent.yaml", "utf8")).toBe(edited);
    expect(owner("/etc/hafleet/agent.yaml")).toBe("root:hafleet-agent 640");
  });

  it("run under a real systemd, sandboxed: start after check-config, reach HAProxy's admin socket, reload, stop", async () => {
    const port = await freePort();
    await writeFile("/etc/hafleet/controller.yaml", `listen: 127.0.0.1:${port}\ndiscovery: { file: /etc/hafleet/catalog.json }\nbackends: [{ backend: be_app, service: web }]\n`);
    await writeFile("/etc/hafleet/catalog.json", JSON.stringify({ services: { web: [{ address: "127.0.0.41", port: 8041 }] } }));
    const agentConfig = `controllers: [127.0.0.1:${port}]\nsockets: [/run/haproxy/admin.sock]\nid: edge-1\n`;
    await writeFile("/etc/hafleet/agent.yaml", agentConfig);
    const pid = await bootSystemd();
    const inside = `/proc/${pid}/root`;
    const systemctl = (...args: string[]) => run("nsenter", ["--target", String(pid), "--mount", "--pid", "systemctl", ...args]);
    const property = (unit: string, name: string) => systemctl("show", "--value", `--property=${name}`, unit).stdout.trim();
    const log = async (unit: string) => readFile(`${inside}/run/${unit}.log`, "utf8").catch(() => "");

    await until(() => property("hafleet-agent.service", "ActiveState") === "active" && property("hafleet-controller.service", "ActiveState") === "active", "both units active");
    await until(async () => serving(parseServersState(await sendRaw(`${inside}/run/haproxy/admin.sock`, "show servers state be_app")), "be_app").join() === "127.0.0.41:8041", "the agent applies through the socket");

    const mainPid = property("hafleet-agent.service", "MainPID");
    await writeFile("/etc/hafleet/agent.yaml", agentConfig + "bogus: 1\n");
    expect(systemctl("reload", "hafleet-agent.service").status).toBe(0);
    await until(async () => (await log("hafleet-agent")).includes("bogus: line 4:1: unknown field"), "the bad file refused");
    await writeFile("/etc/hafleet/agent.yaml", agentConfig);
    expect(systemctl("reload", "hafleet-agent.service").status).toBe(0);
    await until(async () => (await log("hafleet-agent")).includes("restarted with the new configuration"), "the agent reloaded");
    expect([property("hafleet-agent.service", "ActiveState"), property("hafleet-agent.service", "MainPID")]).toEqual(["active", mainPid]);

    expect(systemctl("stop", "hafleet-agent.service", "hafleet-controller.service").status).toBe(0);
    expect([property("hafleet-agent.service", "Result"), property("hafleet-controller.service", "Result")]).toEqual(["success", "success"]);
    await stopSystemd();
    await rm("/etc/hafleet/catalog.json");
  }, 60_000);

  it("are configured by the Ansible role: check mode changes nothing, a bad value lands nowhere, runs are idempotent", async () => {
    const inventory = join(work, "inventory.yml");
    const playbook = (extra: string[] = []) => run("ansible-playbook", ["-i", inventory, "deploy/ansible/site.yml", ...extra]);
    const hostVars = (controllers: string[]) =>
      JSON.stringify({
        haproxy: {
          hosts: {
            localhost: {
              ansible_connection: "local",
              ansible_python_interpreter: "/usr/bin/python3",
              hafleet_agent_deb: AGENT_DEB,
              hafleet_agent_controllers: controllers,
              hafleet_agent_labels: { region: "eu-west-1", role: "edge" },
              hafleet_agent_sockets: ["/run/haproxy/admin.sock", "127.0.0.1:9999"],
              hafleet_agent_tls: TLS,
            },
          },
        },
      });
    const TLS = { ca: "/etc/hafleet/tls/ca.crt", cert: "/etc/hafleet/tls/agent-localhost.crt", key: "/etc/hafleet/tls/agent-localhost.key" };
    const before = await readFile("/etc/hafleet/agent.yaml", "utf8");

    await writeFile(inventory, hostVars(["ctl-1.internal:7900", "[2001:db8::1]:7900"]));
    const check = playbook(["--check"]);
    expect(check.status, check.stdout).toBe(0);
    expect(check.stdout).toMatch(/localhost +: ok=\d+ +changed=[1-9]/);
    expect(await readFile("/etc/hafleet/agent.yaml", "utf8")).toBe(before);

    const first = playbook();
    expect(first.status, first.stdout).toBe(0);
    expect(await loadAgentConfig("/etc/hafleet/agent.yaml")).toMatchObject({
      controllers: ["ctl-1.internal:7900", "[2001:db8::1]:7900"],
      sockets: ["/run/haproxy/admin.sock", "127.0.0.1:9999"],
      id: "localhost",
      labels: { region: "eu-west-1", role: "edge" },
      tls: TLS,
    });
    expect(owner("/etc/hafleet/agent.yaml")).toBe("root:hafleet-agent 640");
    const second = playbook();
    expect(second.stdout).toMatch(/localhost +: ok=\d+ +changed=0 +unreachable=0 +failed=0/);

    const written = await readFile("/etc/hafleet/agent.yaml", "utf8");
    await writeFile(inventory, hostVars(["ctl-1.internal:99999"]));
    const refused = playbook();
    expect(refused.status).not.toBe(0);
    expect(refused.stdout).toContain("controllers[0]: line 3:");
    expect(await readFile("/etc/hafleet/agent.yaml", "utf8")).toBe(written);
  }, 120_000);

  it("are not installed over by install.sh, whose unit would shadow theirs", () => {
    const refused = run("bash", ["deploy/install.sh"]);
    expect([refused.status, refused.stderr]).toEqual([1, expect.stringContaining("installed as a Debian package")]);
  });

  it("leave nothing behind when purged", () => {
    ok("dpkg", "--purge", "hafleet-agent", "hafleet-controller");
    expect(leftovers()).toEqual([]);
    expect([installed("hafleet-agent"), installed("hafleet-controller")]).toEqual([false, false]);
  });
});

describe("deploy/install.sh, for hosts without dpkg", () => {
  it("installs idempotently, uninstalls keeping the settings, and purges", async () => {
    ok("bash", "deploy/install.sh");
    await writeFile("/etc/hafleet/agent.yaml", (await readFile("/etc/hafleet/agent.yaml", "utf8")) + "# kept\n");
    ok("bash", "deploy/install.sh");
    expect(await readFile("/etc/hafleet/agent.yaml", "utf8")).toMatch(/# kept\n$/);
    expect(ok("/usr/local/bin/hafleet-agent", "--version")).toBe(`hafleet-agent ${VERSION}\n`);
    expect(ok("runuser", "-u", "hafleet-agent", "--", "/usr/local/bin/hafleet-agent", "check-config", "/etc/hafleet/agent.yaml")).toBe("/etc/hafleet/agent.yaml: ok\n");
    expect(ok("id", "--name", "--groups", "hafleet-agent").trim().split(" ").sort()).toEqual(["hafleet-agent", "haproxy"]);
    expect(ok("grep", "^ExecStart=", "/etc/systemd/system/hafleet-agent.service")).toBe("ExecStart=/usr/local/bin/hafleet-agent run --config /etc/hafleet/agent.yaml\n");
    expect(run("systemd-analyze", ["verify", "hafleet-agent.service"], { cwd: "/etc/systemd/system" }).status).toBe(0);
    ok("bash", "deploy/install.sh", "--controller");
    expect(ok("/usr/local/bin/hafleet", "--version")).toBe(`hafleet ${VERSION}\n`);

    ok("bash", "deploy/install.sh", "--uninstall");
    expect(existsSync("/usr/local/bin/hafleet-agent")).toBe(false);
    expect(existsSync("/etc/hafleet/agent.yaml")).toBe(true);
    expect(run("getent", ["passwd", "hafleet-agent"]).status).toBe(0);
    ok("bash", "deploy/install.sh", "--purge");
    ok("bash", "deploy/install.sh", "--controller", "--purge");
    expect(leftovers()).toEqual([]);
  });
});
