#!/usr/bin/env node
import { runCli, type Command } from "../../agent/cli/run-cli.js";
import { createLogger } from "../../agent/log.js";

const HELP = `Usage: hafleet COMMAND [options]

The hafleet controller and fleet commands.

Commands:
  controller   watch service discovery and stream desired backend sets to agents (not yet)
  status       the fleet's sync and drift status (not yet)

Run 'hafleet COMMAND --help' for a command's options.`;

function notYet(name: string): Command {
  return {
    help: `Usage: hafleet ${name}\n\nNot yet available in this version of hafleet; 'hafleet-agent apply' works today.`,
    run: async () => {
      process.stderr.write(`hafleet ${name}: not yet available in this version; use 'hafleet-agent apply' for now\n`);
      return 2;
    },
  };
}

const commands: Record<string, Command> = { controller: notYet("controller"), status: notYet("status") };

process.exitCode = await runCli("hafleet", HELP, commands, process.argv.slice(2), createLogger());
