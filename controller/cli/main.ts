#!/usr/bin/env node
import { runCli, type Command } from "../../agent/cli/run-cli.js";
import { createLogger } from "../../agent/log.js";
import { CONTROLLER_HELP, controllerCommand } from "./controller-command.js";

const HELP = `Usage: hafleet COMMAND [options]

The hafleet controller and fleet commands.

Commands:
  controller   watch service discovery and stream desired backend sets to agents

Run 'hafleet COMMAND --help' for a command's options.`;

const commands: Record<string, Command> = {
  controller: { help: CONTROLLER_HELP, run: controllerCommand },
};

process.exitCode = await runCli("hafleet", HELP, commands, process.argv.slice(2), createLogger());
