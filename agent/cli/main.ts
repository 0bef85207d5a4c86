#!/usr/bin/env node
import { createLogger } from "../log.js";
import { runCli, type Command } from "./run-cli.js";
import { APPLY_HELP, applyCommand } from "./apply-command.js";
import { RUN_HELP, runCommand } from "./run-command.js";
import { SHOW_HELP, showCommand } from "./show-command.js";

const HELP = `Usage: hafleet-agent COMMAND [options]

Applies desired HAProxy backend servers through the Runtime API, without reloads.

Commands:
  apply   plan, apply and verify a desired-state file on one or more HAProxy
  run     keep HAProxy in step with the desired state a hafleet controller streams
  show    print what HAProxy runs, per backend and server

Run 'hafleet-agent COMMAND --help' for a command's options.`;

const commands: Record<string, Command> = {
  apply: { help: APPLY_HELP, run: applyCommand },
  run: { help: RUN_HELP, run: runCommand },
  show: { help: SHOW_HELP, run: showCommand },
};

process.exitCode = await runCli("hafleet-agent", HELP, commands, process.argv.slice(2), createLogger());
