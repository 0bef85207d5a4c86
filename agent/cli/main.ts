#!/usr/bin/env node
import { createLogger } from "../log.js";
import { runCli, type Command } from "./run-cli.js";
import { packageVersion } from "../config/package-version.js";
import { APPLY_HELP, applyCommand } from "./apply-command.js";
import { CHECK_CONFIG_HELP, checkConfigCommand } from "./check-config-command.js";
import { RELOAD_HELP, reloadCommand } from "./reload-command.js";
import { RENDER_HELP, renderCommand } from "./render-command.js";
import { RUN_HELP, runCommand } from "./run-command.js";
import { SAVE_STATE_HELP, saveStateCommand } from "./save-state-command.js";
import { SHOW_HELP, showCommand } from "./show-command.js";

const HELP = `Usage: hafleet-agent COMMAND [options]

Applies desired HAProxy backend servers through the Runtime API, without reloads.

Commands:
  apply         plan, apply and verify a desired-state file on one or more HAProxy
  run           keep HAProxy in step with the desired state a hafleet controller streams
  show          print what HAProxy runs, per backend and server
  render        render a haproxy.cfg from a nunjucks template and a desired-state file
  save-state    write HAProxy's server-state file now (before a reload by hand)
  reload        save the server state, reload HAProxy through its master CLI, check the outcome
  check-config  check a configuration file for 'run --config', print 'FILE: ok' or its problems

Run 'hafleet-agent COMMAND --help' for a command's options; 'hafleet-agent --version' for the version.`;

const commands: Record<string, Command> = {
  apply: { help: APPLY_HELP, run: applyCommand },
  run: { help: RUN_HELP, run: runCommand },
  show: { help: SHOW_HELP, run: showCommand },
  render: { help: RENDER_HELP, run: renderCommand },
  "save-state": { help: SAVE_STATE_HELP, run: saveStateCommand },
  reload: { help: RELOAD_HELP, run: reloadCommand },
  "check-config": { help: CHECK_CONFIG_HELP, run: checkConfigCommand },
};

const argv = process.argv.slice(2);
if (argv.length === 1 && argv[0] === "--version") process.stdout.write(`hafleet-agent ${packageVersion()}\n`);
else process.exitCode = await runCli("hafleet-agent", HELP, commands, argv, createLogger());
