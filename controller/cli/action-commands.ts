import type { Logger } from "pino";
import { parseFlags } from "../../agent/cli/args.js";
import { EXIT } from "../../agent/cli/run-cli.js";
import { UsageError } from "../../agent/errors.js";
import { ROLLOUT_ACTIONS, type RolloutAction } from "../http/api-server.js";
import { API_FLAG_OPTIONS, API_FLAGS_HELP, ApiClient } from "./api-client.js";
import { clock, frozenLine, printable, rolloutLine } from "./format-status.js";

export const FREEZE_HELP = `Usage: hafleet freeze --reason TEXT [--url URL] [--token-file F]
       hafleet unfreeze [--url URL] [--token-file F]

The kill switch: 'freeze' stops every push to every agent (what is in flight completes;
agents keep serving what they run; acks and status go on) until 'unfreeze'. Kept across
controller restarts when the controller has a stateDir. Needs the controller's token.

  --reason TEXT     why (shown in status and logs); freeze only
${API_FLAGS_HELP}
  -h, --help        this text`;

export const ROLLOUT_HELP = `Usage: hafleet rollout status|pause|resume|abort|rollback|retry [--url URL] [--token-file F]

  status     the current rollout: phase, wave, halt reason, history
  pause      stop advancing waves (what is out stays out)
  resume     go on with a paused or halted rollout from its current wave
  abort      stop the rollout and put every agent back on the last good state
  rollback   the same during a rollout; after a completed one, go back to the state before it
  retry      start a rolled-back or aborted change over from its canary (waves planned afresh)
${API_FLAGS_HELP}
  -h, --help this text

Every action but status needs the controller's token. Exit codes: 0 the rollout is under way,
paused or completed (or there is none); 1 it halted, rolled back or was aborted; 2 invalid
input; 3 controller unreachable or refusing the action (the reason is printed).`;

export const AGENT_ACTIONS_HELP = `Usage: hafleet forget AGENT [--url URL] [--token-file F]
       hafleet cordon AGENT --reason TEXT [--url URL] [--token-file F]
       hafleet uncordon AGENT [--url URL] [--token-file F]

  forget     drop a disconnected agent at once (a host taken out of service): it is no
             longer shown nor waited for; a connected one is refused
  cordon     keep an agent out of rollouts: no wave holds it, it runs the last good state of
             a staged backend until the rollout completes (kept across restarts with stateDir)
  uncordon   let it back into rollouts
  --reason TEXT   why (shown in status); cordon only
${API_FLAGS_HELP}
  -h, --help this text

They need the controller's token.`;

export async function freezeCommand(args: string[], _log: Logger): Promise<number> {
  const flags = parseFlags("freeze", args, { ...API_FLAG_OPTIONS, reason: { type: "string" } });
  if (flags.reason === undefined) throw new UsageError("freeze needs --reason: operators after you will want to know why");
  const client = await ApiClient.fromFlags(flags);
  await client.act("freeze", { reason: flags.reason });
  process.stdout.write(`fleet frozen: ${flags.reason}\n`);
  return EXIT.ok;
}

export async function unfreezeCommand(args: string[], _log: Logger): Promise<number> {
  const flags = parseFlags("unfreeze", args, API_FLAG_OPTIONS);
  const client = await ApiClient.fromFlags(flags);
  await client.act("unfreeze");
  process.stdout.write("fleet unfrozen: pushing what agents lack\n");
  return EXIT.ok;
}

export async function rolloutCommand(args: string[], _log: Logger): Promise<number> {
  const [action, ...rest] = args;
  if (action !== "status" && !(ROLLOUT_ACTIONS as readonly string[]).includes(action ?? "")) {
    throw new UsageError(`rollout needs one of status, ${ROLLOUT_ACTIONS.join(", ")}`);
  }
  const flags = parseFlags("rollout", rest, API_FLAG_OPTIONS);
  const client = await ApiClient.fromFlags(flags);
  if (action !== "status") await client.act(`rollout/${action as RolloutAction}`);
  const status = await client.status({ problems: true });
  const rollout = status.rollout;
  if (rollout === null) {
    process.stdout.write("no rollout\n");
    return EXIT.ok;
  }
  if (status.frozen) process.stdout.write(frozenLine(status.frozen) + "\n");
  process.stdout.write(rolloutLine(rollout) + "\n");
  for (const entry of rollout.history.slice(-10)) process.stdout.write(`  ${clock(entry.at)}  ${printable(entry.event)}\n`);
  return rollout.phase === "halted" || rollout.phase === "rolled-back" || rollout.phase === "aborted" ? EXIT.notConverged : EXIT.ok;
}

/** forget / cordon / uncordon AGENT. */
export function agentActionCommand(action: "forget" | "cordon" | "uncordon") {
  return async (args: string[], _log: Logger): Promise<number> => {
    const [agent, ...rest] = args;
    if (agent === undefined || agent.startsWith("-")) throw new UsageError(`${action} needs the agent's id first: hafleet ${action} AGENT`);
    const flags = parseFlags(action, rest, action === "cordon" ? { ...API_FLAG_OPTIONS, reason: { type: "string" } } : API_FLAG_OPTIONS);
    const reason = (flags as { reason?: string }).reason;
    if (action === "cordon" && reason === undefined) throw new UsageError("cordon needs --reason: operators after you will want to know why");
    const client = await ApiClient.fromFlags(flags);
    await client.act(action, action === "cordon" ? { agent, reason } : { agent });
    const done = action === "forget" ? "forgotten" : action === "cordon" ? `cordoned: kept out of rollouts (${printable(reason!)})` : "uncordoned: back in rollouts";
    process.stdout.write(`agent ${printable(agent)} ${done}\n`);
    return EXIT.ok;
  };
}
