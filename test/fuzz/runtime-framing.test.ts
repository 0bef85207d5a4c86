import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Address, Name, Port, Weight } from "../../agent/model/values.js";
import { RuntimeCommand, type CommandKind } from "../../agent/runtime/commands.js";
import { PromptFramer } from "../../agent/runtime/prompt-framer.js";
import { classifyReply } from "../../agent/runtime/reply.js";
import { fixture, garbage, hostileText } from "./support.js";

/*
 * The interactive session's byte stream, however the socket chunks it, and the judgement of
 * each reply: only the exact success text of a change counts as success.
 */

const PROMPT = "\n> ";

function frame(chunks: readonly string[]): { replies: string[]; pending: string } {
  const framer = new PromptFramer();
  const replies = chunks.flatMap((chunk) => framer.push(chunk));
  return { replies, pending: framer.pending };
}

/** Text thick with prompts and prompt fragments, and real multi-line replies. */
const stream = fc.oneof(
  fc.string({ unit: fc.constantFrom("\n", ">", " ", PROMPT, "\n\n", "a", ";", "\0", "é", "😀"), maxLength: 200 }),
  fc.array(fc.oneof(fc.constantFrom(fixture("show-servers-state"), fixture("show-stat-one-backend"), PROMPT), garbage("\n> x", 40)), { maxLength: 8 }).map((parts) => parts.join("")),
);

/** A stream and where the socket cut it, including cuts inside a prompt and empty chunks. */
const chunked = stream.chain((text) =>
  fc.array(fc.nat({ max: text.length }), { maxLength: 30 }).map((cuts) => {
    const points = [0, ...cuts.sort((a, b) => a - b), text.length];
    return { text, chunks: points.slice(1).map((end, i) => text.slice(points[i], end)) };
  }),
);

describe("PromptFramer", () => {
  it("gives the same replies and pending text whatever the chunking: the text between prompts, trailing newlines trimmed", () => {
    fc.assert(
      fc.property(chunked, ({ text, chunks }) => {
        const pieces = text.split(PROMPT);
        const expected = { replies: pieces.slice(0, -1).map((piece) => piece.replace(/\n+$/, "")), pending: pieces.at(-1) };
        expect(frame(chunks)).toEqual(expected);
        expect(frame([text])).toEqual(expected);
      }),
      { seed: 0xf4a3, numRuns: 1_000 },
    );
  });
});

/** Every change command, with names and values that pass the whitelist. */
const BE = "be_app" as Name;
const SRV = "srv1" as Name;
const CHANGES: Record<Exclude<CommandKind, `show-${string}`>, RuntimeCommand> = {
  "set-addr": RuntimeCommand.setAddress(BE, SRV, "10.0.0.1" as Address, 80 as Port),
  "set-weight": RuntimeCommand.setWeight(BE, SRV, 1 as Weight),
  "set-state": RuntimeCommand.setState(BE, SRV, "ready"),
  "enable-health": RuntimeCommand.enableHealth(BE, SRV),
  "add-server": RuntimeCommand.addServer(BE, SRV, "10.0.0.1" as Address, 80 as Port, { check: false }),
  "del-server": RuntimeCommand.deleteServer(BE, SRV),
  "wait-removable": RuntimeCommand.waitRemovable(BE, SRV, 2_000),
};

/** The whole success reply of each change, as HAProxy 2.6 prints it (`wait`: 3.0+). */
const SUCCESS: Record<keyof typeof CHANGES, string> = {
  "set-addr": "IP changed from '127.0.0.1' to '127.0.0.2', port changed from '80' to '8081' by 'stats socket command'",
  "set-weight": "",
  "set-state": "",
  "enable-health": "",
  "add-server": "New server registered.",
  "del-server": "Server deleted.",
  "wait-removable": "Done.",
};

const REFUSALS = [
  "Backend must use a dynamic load balancing to support dynamic servers.",
  "No such server.",
  "No such backend.",
  "Can't find backend.",
  "Only servers in maintenance mode can be deleted.",
  "Invalid addr '300.1.1.1' by 'stats socket command'",
  "Absolute weight can only be between 0 and 256 inclusive.",
  "Unknown command, but maybe one of the following ones is a better match:",
];

describe("classifyReply", () => {
  const kind = fc.constantFrom(...(Object.keys(CHANGES) as (keyof typeof CHANGES)[]));
  const reply = (success: string): fc.Arbitrary<string> =>
    fc.oneof(
      fc.constant(success),
      fc.constantFrom(...REFUSALS),
      hostileText,
      // A success text run together with more: a second reply, a refusal after it, garbage before it.
      fc.tuple(fc.oneof(hostileText, fc.constantFrom(...REFUSALS)), fc.constantFrom("\n", "", " ")).chain(([extra, glue]) => fc.constantFrom(`${success}${glue}${extra}`, `${extra}${glue}${success}`)),
    );

  it("takes a change for done only on its whole success text", () => {
    const cases = kind.chain((which) => reply(SUCCESS[which]).map((text) => ({ which, text })));
    fc.assert(
      fc.property(cases, ({ which, text }) => {
        const command = CHANGES[which];
        const result = classifyReply(command, text);
        expect(result.command).toBe(command);
        expect(result.text).toBe(text);
        // set server addr too: a success sentence with anything before or after it is not one (see set-addr-reply.ts).
        expect(result.ok).toBe(text === SUCCESS[which]);
        if (!result.ok) expect(["dynamic-servers-refused", "no-such-server", "no-such-backend", "refused"]).toContain(result.reason);
      }),
      { seed: 0xc1a5, numRuns: 1_000 },
    );
  });
});
