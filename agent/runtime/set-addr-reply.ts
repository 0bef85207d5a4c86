/**
 * Reads the reply to `set server B/S addr A port P` by what it says, whatever the version's words.
 *
 * Every success reports, for the address and for the port, that it changed or needed no change,
 * in clauses joined by `, ` and followed by who asked (`by 'stats socket command'`):
 *   2.6: `IP changed from 'a' to 'b', port changed from '1' to '2' by '...'`,
 *        `no need to change the addr, port changed from ...`, `..., no need to change the port by '...'`
 *   3.0+: a clause only for what changed (`port changed from '1' to '2' by '...'`),
 *        and `nothing changed` when nothing did.
 * A reply with any other clause is not a success, even if it starts like one: 2.6 answers
 * `IP changed from 'a' to 'b', problem converting port 'x' to an int by '...'` after changing
 * only the address. The values are quoted by HAProxy, and ours never hold a quote.
 */

const CLAUSES: ReadonlyArray<{ subject: "addr" | "port"; pattern: RegExp }> = [
  { subject: "addr", pattern: /^IP changed from '[^']*' to '[^']*'$/ },
  { subject: "addr", pattern: /^no need to change the addr$/ },
  { subject: "port", pattern: /^port changed from '[^']*' to '[^']*'$/ },
  { subject: "port", pattern: /^no need to change the port$/ },
];
const NOTHING_CHANGED = /^nothing changed$/;
const REQUESTER = / by '[^']*'$/;

export function isAddressChangeReport(text: string): boolean {
  if (NOTHING_CHANGED.test(text)) return true;
  const body = text.replace(REQUESTER, "");
  if (body === "") return false;
  const seen = new Set<string>();
  for (const clause of body.split(", ")) {
    const known = CLAUSES.find((candidate) => candidate.pattern.test(clause));
    // One clause per subject: two would be a reply about something else.
    if (known === undefined || seen.has(known.subject)) return false;
    seen.add(known.subject);
  }
  return true;
}
