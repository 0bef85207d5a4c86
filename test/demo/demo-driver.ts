import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseFlags } from "../../agent/cli/args.js";
import { DemoRun, type RunSettings } from "./demo-run.js";
import { AGENT_BIN, AGENT_ID, BACKEND, CONTROLLER_BIN, SERVICE, setUp, type DemoSetup } from "./demo-setup.js";
import { DemoStack } from "./demo-stack.js";
import { scenario } from "./scenario.js";
import { nameRange } from "./view.js";

/*
 * The one-command demo (deploy/demo/demo.sh runs this): a real HAProxy, upstream web servers,
 * the controller and an agent; the catalog scaled step by step under load; a summary; and
 * everything stopped again, on Ctrl-C and on failure too.
 */

const HELP = `Usage: bash deploy/demo/demo.sh [--short] [--keep]

Runs hafleet end to end on this machine's loopback: HAProxy (master-worker, a backend of 4
server-template slots), 6 upstream web servers, the hafleet controller reading a catalog file,
and an agent. Scales the service 3 -> 6 -> 2 -> 5 -> 3 under a steady load, shows a hostile
catalog entry dropped and an emptied catalog held, then prints a summary and stops it all.

  --short   fewer steps, shorter pauses (for CI: well under a minute)
  --keep    leave everything running at the end, and say how to reach and stop it
  -h, --help

Exit codes: 0 every step converged, no request failed and HAProxy never reloaded; 1 otherwise;
2 invalid flags; 130 interrupted.`;

const SETTINGS: Record<"full" | "short", RunSettings> = {
  full: { dwellMs: 3_000, ratePerSecond: 150, loadMaxMs: 180_000, convergeTimeoutMs: 15_000 },
  short: { dwellMs: 1_000, ratePerSecond: 150, loadMaxMs: 60_000, convergeTimeoutMs: 15_000 },
};

let quiet = false;
const say = (text: string): void => {
  if (!quiet) process.stdout.write(text + "\n");
};

async function main(args: string[]): Promise<number> {
  let flags: ReturnType<typeof parseDemoFlags>;
  try {
    flags = parseDemoFlags(args);
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n\n${HELP}\n`);
    return 2;
  }
  if (flags.help) {
    say(HELP);
    return 0;
  }
  const short = flags.short === true;
  const stack = new DemoStack(await mkdtemp(join(tmpdir(), "hafleet-demo.")));
  let setup: DemoSetup | null = null;
  let run: DemoRun | null = null;
  let ending: Promise<void> | null = null;
  const interrupt = (signal: NodeJS.Signals, code: number): void => {
    say(`\n${signal}: stopping everything the demo started`);
    quiet = true;
    ending ??= (async () => {
      await run?.abort();
      await tearDown(stack, setup, true);
      process.exit(code);
    })();
  };
  process.on("SIGINT", () => interrupt("SIGINT", 130));
  process.on("SIGTERM", () => interrupt("SIGTERM", 143));

  let ok = false;
  try {
    setup = await setUp(stack);
    await printHeader(setup, short);
    run = new DemoRun(setup, stack, SETTINGS[short ? "short" : "full"], say);
    ok = await run.run(scenario(short));
    await printStatus(setup.statusUrl);
  } catch (error) {
    say(`\ndemo failed: ${(error as Error).message}`);
  }
  if (ending !== null) return new Promise(() => {}); // the interrupt ends the process
  if (flags.keep && setup !== null) {
    keep(stack, setup);
    return ok ? 0 : 1;
  }
  await tearDown(stack, setup, ok);
  return ok ? 0 : 1;
}

function parseDemoFlags(args: string[]) {
  return parseFlags("demo", args, { short: { type: "boolean" }, keep: { type: "boolean" }, help: { type: "boolean", short: "h" } });
}

async function printHeader(setup: DemoSetup, short: boolean): Promise<void> {
  const slots = (await setup.observer.haproxy()).all;
  const checks = slots.every((server) => server.checked) ? "health checks on" : "NO health checks";
  const dir = setup.dir;
  say(`hafleet demo${short ? " (short)" : ""}: HAProxy ${setup.haproxyVersion}, the hafleet controller and one agent, on 127.0.0.1`);
  say(`   HAProxy     pid ${setup.haproxy.pid} (worker ${setup.workerPid}), frontend :${setup.frontendPort}, admin socket ${setup.adminSocket}`);
  say(`   backend     ${BACKEND}: ${slots.length} server-template slots (${nameRange(slots.map((server) => server.rawName))}), all empty, ${checks}`);
  say(`   upstreams   ${setup.upstreamPorts.length} web servers on ${setup.upstreamPorts.map((port) => `:${port}`).join(" ")} (pid ${setup.upstreams.pid})`);
  say(`   controller  pid ${setup.controller.pid}, service '${SERVICE}' from ${setup.catalogFile} to ${BACKEND}, status ${setup.statusUrl}`);
  say(`   agent       pid ${setup.agent.pid}, id ${AGENT_ID}: streams from the controller (gRPC :${setup.grpcPort}), applies through the admin socket`);
  say(`   logs        ${dir}/{haproxy,controller,agent,upstreams}.log`);
}

/** The real `hafleet status`, once, against the demo's controller. */
async function printStatus(url: string): Promise<void> {
  say(`\n== hafleet status --url ${url}`);
  const output = await new Promise<string>((resolve) => {
    // Its exit code says whether all is in sync, which the summary has said already.
    execFile(process.execPath, [CONTROLLER_BIN, "status", "--url", url], { timeout: 10_000 }, (_error, stdout, stderr) => resolve(stdout + stderr));
  });
  say(output.trimEnd().replace(/^(?=.)/gm, "   "));
}

function keep(stack: DemoStack, setup: DemoSetup): void {
  setup.observer.close();
  const pidFile = stack.detach();
  say("\n== left running (--keep)");
  say(`   status page   ${setup.statusUrl}   (node ${CONTROLLER_BIN} status --url ${setup.statusUrl})`);
  say(`   frontend      http://127.0.0.1:${setup.frontendPort}/   (each answer names the upstream)`);
  say(`   admin socket  ${setup.adminSocket}   (node ${AGENT_BIN} show --socket ${setup.adminSocket})`);
  say(`   catalog       ${setup.catalogFile}   (edit it: HAProxy follows)`);
  say(`   stop it       kill $(cat ${pidFile}); sleep 1; rm -rf ${stack.dir}`);
}

/** Stops every process; the temp dir goes too, unless the demo failed and its logs tell why. */
async function tearDown(stack: DemoStack, setup: DemoSetup | null, removeDir: boolean): Promise<void> {
  setup?.observer.close();
  await stack.stop();
  if (removeDir) await rm(stack.dir, { recursive: true, force: true });
  process.stdout.write(`\nstopped every process the demo started; ${removeDir ? `removed ${stack.dir}` : `logs kept in ${stack.dir}`}\n`);
}

// exit, not exitCode: after a failed start an idle socket or timer may remain, and nothing should wait on it.
process.exit(await main(process.argv.slice(2)));
