#!/usr/bin/env node
import { runCli, type Command } from "../../agent/cli/run-cli.js";
import { packageVersion } from "../../agent/config/package-version.js";
import { createLogger } from "../../agent/log.js";
import { AGENT_ACTIONS_HELP, agentActionCommand, FREEZE_HELP, freezeCommand, ROLLOUT_HELP, rolloutCommand, unfreezeCommand } from "./action-commands.js";
import { CERTS_HELP, certsCommand } from "./certs-command.js";
import { CONTROLLER_HELP, controllerCommand } from "./controller-command.js";
import { STATUS_HELP, statusCommand } from "./status-command.js";
import { WAIT_HELP, waitCommand } from "./wait-command.js";

const HELP = `Usage: hafleet COMMAND [options]

The hafleet controller and fleet commands.

Commands:
  controller   watch service discovery and stream desired backend sets to agents
  status       what every agent runs, as the controller sees it (exit 1 when not in sync)
  wait         block until the fleet runs the desired state (for deploy pipelines)
  rollout      status|pause|resume|abort|rollback|retry of a staged rollout
  freeze       the kill switch: stop every push fleet-wide ('unfreeze' to go on)
  cordon       keep an agent out of rollouts ('uncordon' to let it back)
  forget       drop a departed agent from the status at once
  certs        create the fleet CA and issue agent and controller certificates (mTLS)

Run 'hafleet COMMAND --help' for a command's options; 'hafleet --version' for the version.`;

const commands: Record<string, Command> = {
  controller: { help: CONTROLLER_HELP, run: controllerCommand },
  status: { help: STATUS_HELP, run: statusCommand },
  wait: { help: WAIT_HELP, run: waitCommand },
  rollout: { help: ROLLOUT_HELP, run: rolloutCommand },
  freeze: { help: FREEZE_HELP, run: freezeCommand },
  unfreeze: { help: FREEZE_HELP, run: unfreezeCommand },
  certs: { help: CERTS_HELP, run: certsCommand },
  forget: { help: AGENT_ACTIONS_HELP, run: agentActionCommand("forget") },
  cordon: { help: AGENT_ACTIONS_HELP, run: agentActionCommand("cordon") },
  uncordon: { help: AGENT_ACTIONS_HELP, run: agentActionCommand("uncordon") },
};

const argv = process.argv.slice(2);
if (argv.length === 1 && argv[0] === "--version") process.stdout.write(`hafleet ${packageVersion()}\n`);
else process.exitCode = await runCli("hafleet", HELP, commands, argv, createLogger());
