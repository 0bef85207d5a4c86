import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { addressSchema, nameSchema, portSchema, weightSchema } from "../../agent/model/values.js";
import { RuntimeCommand, type CommandKind } from "../../agent/runtime/commands.js";
import { PromptFramer } from "../../agent/runtime/prompt-framer.js";
import { classifyReply, type FailureReason } from "../../agent/runtime/reply.js";

/*
 * One meaning, every version's words. runtime-replies-sequential.txt holds, per version, the
 * replies of one HAProxy to the same commands sent one connection each (`>>> command` then the
 * reply as written); prompt-session*.txt the same kind of commands pipelined in prompt mode.
 * The expected meaning below is the same for every version: that is the point.
 */

const VERSIONS = ["2.6", "2.8", "3.0", "3.2", "3.4"] as const;

function fixture(version: string, name: string): string {
  return readFileSync(new URL(`../fixtures/haproxy-${version}/${name}`, import.meta.url), "utf8");
}

const B = nameSchema.parse("b");
const S = nameSchema.parse("srv1");
const ADDRESS = addressSchema.parse("127.0.0.2");
const PORT = portSchema.parse(8002);
/** A command of each kind: a reply is classified by the kind of command it answers, not by its values. */
const OF_KIND: Record<"set-addr" | "add-server" | "set-weight" | "enable-health" | "del-server" | "set-state", RuntimeCommand> = {
  "set-addr": RuntimeCommand.setAddress(B, S, ADDRESS, PORT),
  "add-server": RuntimeCommand.addServer(B, S, ADDRESS, PORT, { check: false }),
  "set-weight": RuntimeCommand.setWeight(B, S, weightSchema.parse(1)),
  "enable-health": RuntimeCommand.enableHealth(B, S),
  "del-server": RuntimeCommand.deleteServer(B, S),
  "set-state": RuntimeCommand.setState(B, S, "ready"),
};

type Meaning = "ok" | FailureReason;

/** In the order of the capture (see the fixture): what each reply means, whatever the version says. */
const SEQUENTIAL: ReadonlyArray<[string, keyof typeof OF_KIND, Meaning]> = [
  ["set server b/srv1 addr 127.0.0.1 port 1", "set-addr", "ok"], // nothing differs
  ["set server b/srv1 addr 127.0.0.1 port 8002", "set-addr", "ok"], // only the port: the finding of issue 13
  ["set server b/srv1 addr 127.0.0.2 port 8002", "set-addr", "ok"], // only the address
  ["set server b/srv1 addr 127.0.0.3 port 8003", "set-addr", "ok"],
  ["set server b/srv1 addr 127.0.0.3 port 8003", "set-addr", "ok"], // nothing differs again
  ["set server b/srv1 addr ::1 port 8003", "set-addr", "ok"],
  ["set server b/srv1 addr x port 8003", "set-addr", "refused"],
  // 2.6 changes the address and then refuses the port, in a reply that starts like a success.
  ["set server b/srv1 addr 127.0.0.3 port x", "set-addr", "refused"],
  ["add server be_src/d 127.0.0.1:9002", "add-server", "dynamic-servers-refused"], // balance source
  ["add server be_uri/d 127.0.0.1:9002", "add-server", "dynamic-servers-refused"], // balance uri
  ["add server be_static/d 127.0.0.1:9002", "add-server", "dynamic-servers-refused"], // static-rr
  ["set server b/srv1 weight 300", "set-weight", "refused"],
  ["enable health b/srv1", "enable-health", "refused"],
  ["del server b/srv2", "del-server", "ok"],
  ["set server b/srv9 state ready", "set-state", "no-such-server"],
];

function records(text: string): Array<{ command: string; reply: string }> {
  return text
    .split(/^>>> /m)
    .filter((part) => part !== "")
    .map((part) => {
      const newline = part.indexOf("\n");
      // Non-interactive mode ends most replies with a blank line: not part of the reply.
      return { command: part.slice(0, newline), reply: part.slice(newline + 1).replace(/\n+$/, "") };
    });
}

const meaning = (kind: keyof typeof OF_KIND, text: string): Meaning => {
  const reply = classifyReply(OF_KIND[kind], text);
  return reply.ok ? "ok" : reply.reason;
};

describe.each(VERSIONS)("HAProxy %s replies, classified by meaning", (version) => {
  const captured = records(fixture(version, "runtime-replies-sequential.txt"));

  it("holds the replies to the commands listed here, in order", () => {
    expect(captured.map((record) => record.command)).toEqual(SEQUENTIAL.map(([command]) => command));
  });

  it.each(SEQUENTIAL.map(([command, kind, expected], index) => [index, command, kind, expected] as const))("#%i %s: %s means %s", (index, _command, kind, expected) => {
    const record = captured[index]!;
    expect(meaning(kind, record.reply), `reply ${JSON.stringify(record.reply)}`).toBe(expected);
  });

  it("frames a prompt-mode session of the same commands, one reply per command", () => {
    const commands = fixture(version, "prompt-session-commands.txt").trimEnd().split("\n");
    const framer = new PromptFramer();
    const replies = framer.push(fixture(version, "prompt-session.txt"));
    // The first frame answers `prompt` itself; nothing is left over.
    expect(replies[0]).toBe("");
    expect(replies).toHaveLength(commands.length + 1);
    expect(framer.pending).toBe("");
    const kinds = commands.map((command): CommandKind => (command.includes(" addr ") ? "set-addr" : command.startsWith("add ") ? "add-server" : command.startsWith("del ") ? "del-server" : "set-state"));
    const meanings = replies.slice(1).map((text, index) => meaning(kinds[index] as keyof typeof OF_KIND, text));
    expect(meanings).toEqual(["ok", "ok", "ok", "ok", "refused", "no-such-server", "no-such-backend", "dynamic-servers-refused", "ok", "ok", "refused", "ok", "ok"]);
  });
});

describe.each(["3.0", "3.2", "3.4"] as const)("HAProxy %s: wait srv-removable (3.0+)", (version) => {
  const wait = RuntimeCommand.waitRemovable(nameSchema.parse("be_app"), nameSchema.parse("srv1"), 1_000);
  const judge = (name: string): Meaning => {
    const reply = classifyReply(wait, fixture(version, `${name}.txt`).replace(/\n+$/, ""));
    return reply.ok ? "ok" : reply.reason;
  };

  it("takes only 'Done.' as removable: an expired wait, a server not in maintenance or unknown (a bare 'Failed.') is not", () => {
    expect(["success", "timeout", "not-maint", "unknown"].map((name) => judge(`wait-srv-removable-${name}`))).toEqual(["ok", "refused", "refused", "refused"]);
  });
});
