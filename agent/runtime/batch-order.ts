import { HafleetError } from "../errors.js";
import type { RuntimeCommand } from "./commands.js";

/**
 * What may share one pipelined batch. Since 2.9 (HAProxy commit cd994407a) `set server addr`
 * is applied by a later task, not by the command: a `show servers state` pipelined right after
 * it shows the old address (200 times out of 200, measured on 3.0-3.4), and a `state ready`
 * right after it may put the server into traffic before its new address is in place. So:
 *  - no read after a write: what it reads may predate the write;
 *  - after `set server addr`, nothing else on that server but `set weight` (which takes effect
 *    by itself): `state`, `enable health`, `del server` all act on the address.
 * Such commands go in a later batch, sent once every reply of this one has come back.
 */
export class BatchOrderError extends HafleetError {
  readonly code = "HAFLEET_BATCH_ORDER";
  constructor(
    readonly index: number,
    detail: string,
  ) {
    super(`refusing to pipeline a batch: command ${index + 1} ${detail}`);
    this.name = "BatchOrderError";
  }
}

/** Returns the first violation, or null when the batch may be pipelined as it is. */
export function batchOrderViolation(commands: readonly RuntimeCommand[]): BatchOrderError | null {
  let firstWrite: RuntimeCommand | null = null;
  const addressChanged = new Map<string, number>();
  for (const [index, command] of commands.entries()) {
    if (command.isRead) {
      if (firstWrite !== null) return new BatchOrderError(index, `(${quote(command.text)}) reads after the write ${quote(firstWrite.text)}`);
      continue;
    }
    firstWrite ??= command;
    const target = targetOf(command);
    const changedAt = addressChanged.get(target);
    if (changedAt !== undefined && command.kind !== "set-weight") {
      return new BatchOrderError(index, `(${quote(command.text)}) depends on the address change ${quote(commands[changedAt]?.text ?? "")}, which HAProxy applies later`);
    }
    if (command.kind === "set-addr") addressChanged.set(target, index);
  }
  return null;
}

export function assertBatchOrder(commands: readonly RuntimeCommand[]): void {
  const violation = batchOrderViolation(commands);
  if (violation !== null) throw violation;
}

/** `BACKEND/SERVER`: the first argument after the verb of every change command, the last of `wait`. */
function targetOf(command: RuntimeCommand): string {
  if (command.kind === "wait-removable") return command.text.slice(command.text.lastIndexOf(" ") + 1);
  const rest = command.text.slice(command.verb.length + 1);
  const end = rest.indexOf(" ");
  return end === -1 ? rest : rest.slice(0, end);
}

function quote(text: string): string {
  return `'${text}'`;
}
