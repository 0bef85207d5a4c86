import { describe, expect, it } from "vitest";
import { addressSchema, nameSchema, portSchema, weightSchema, type Address, type Name, type Port, type Weight } from "../../agent/model/values.js";
import { RuntimeCommand, type AdminTarget, type CommandKind } from "../../agent/runtime/commands.js";
import { classifyReply, type CommandReply, type FailureReason } from "../../agent/runtime/reply.js";

const BE = nameSchema.parse("be_app");
const SRV = nameSchema.parse("srv-1.a");
const V4 = addressSchema.parse("127.0.0.2");
const V6 = addressSchema.parse("2001:DB8:0::1");
const PORT = portSchema.parse(8081);

const UNSAFE = /^refusing to build a Runtime API command with an unsafe /;

describe("RuntimeCommand builders: exact command texts", () => {
  it.each<[string, () => RuntimeCommand, CommandKind, string]>([
    ["setAddress IPv4", () => RuntimeCommand.setAddress(BE, SRV, V4, PORT), "set-addr", "set server be_app/srv-1.a addr 127.0.0.2 port 8081"],
    [
      "setAddress IPv6 (address and port are separate arguments, no brackets)",
      () => RuntimeCommand.setAddress(BE, SRV, V6, portSchema.parse(443)),
      "set-addr",
      "set server be_app/srv-1.a addr 2001:db8::1 port 443",
    ],
    ["setWeight", () => RuntimeCommand.setWeight(BE, SRV, weightSchema.parse(17)), "set-weight", "set server be_app/srv-1.a weight 17"],
    ["setWeight 0", () => RuntimeCommand.setWeight(BE, SRV, weightSchema.parse(0)), "set-weight", "set server be_app/srv-1.a weight 0"],
    ["setWeight 256", () => RuntimeCommand.setWeight(BE, SRV, weightSchema.parse(256)), "set-weight", "set server be_app/srv-1.a weight 256"],
    ["setState ready", () => RuntimeCommand.setState(BE, SRV, "ready"), "set-state", "set server be_app/srv-1.a state ready"],
    ["setState drain", () => RuntimeCommand.setState(BE, SRV, "drain"), "set-state", "set server be_app/srv-1.a state drain"],
    ["setState maint", () => RuntimeCommand.setState(BE, SRV, "maint"), "set-state", "set server be_app/srv-1.a state maint"],
    ["addServer IPv4, no options", () => RuntimeCommand.addServer(BE, SRV, V4, PORT, { check: false }), "add-server", "add server be_app/srv-1.a 127.0.0.2:8081"],
    [
      "addServer IPv6 uses [addr]:port",
      () => RuntimeCommand.addServer(BE, SRV, V6, portSchema.parse(80), { check: false }),
      "add-server",
      "add server be_app/srv-1.a [2001:db8::1]:80",
    ],
    [
      "addServer with weight and check",
      () => RuntimeCommand.addServer(BE, SRV, V4, PORT, { weight: weightSchema.parse(10), check: true }),
      "add-server",
      "add server be_app/srv-1.a 127.0.0.2:8081 weight 10 check",
    ],
    [
      "addServer with weight 0 (kept, not taken for absent)",
      () => RuntimeCommand.addServer(BE, SRV, V4, PORT, { weight: weightSchema.parse(0), check: false }),
      "add-server",
      "add server be_app/srv-1.a 127.0.0.2:8081 weight 0",
    ],
    [
      "addServer IPv6 with check only",
      () => RuntimeCommand.addServer(BE, SRV, V6, PORT, { check: true }),
      "add-server",
      "add server be_app/srv-1.a [2001:db8::1]:8081 check",
    ],
    ["deleteServer", () => RuntimeCommand.deleteServer(BE, SRV), "del-server", "del server be_app/srv-1.a"],
    ["enableHealth", () => RuntimeCommand.enableHealth(BE, SRV), "enable-health", "enable health be_app/srv-1.a"],
    ["showServersState", () => RuntimeCommand.showServersState(), "show-servers-state", "show servers state"],
    ["showStat of backends", () => RuntimeCommand.showStat("backends"), "show-stat", "show stat -1 2 -1"],
    ["showStat of backends and servers", () => RuntimeCommand.showStat("backends-and-servers"), "show-stat", "show stat -1 6 -1"],
    ["showServerStat", () => RuntimeCommand.showServerStat(3, 12), "show-stat", "show stat 3 4 12"],
    ["showInfo", () => RuntimeCommand.showInfo(), "show-info", "show info"],
    ["showBackend", () => RuntimeCommand.showBackend(), "show-backend", "show backend"],
  ])("%s", (_label, build, kind, text) => {
    const command = build();
    expect(command).toBeInstanceOf(RuntimeCommand);
    expect(command.kind).toBe(kind);
    expect(command.text).toBe(text);
  });
});

describe("RuntimeCommand.isRead", () => {
  it.each<[() => RuntimeCommand, boolean]>([
    [() => RuntimeCommand.showServersState(), true],
    [() => RuntimeCommand.showStat("backends"), true],
    [() => RuntimeCommand.showInfo(), true],
    [() => RuntimeCommand.showBackend(), true],
    [() => RuntimeCommand.setAddress(BE, SRV, V4, PORT), false],
    [() => RuntimeCommand.setWeight(BE, SRV, weightSchema.parse(1)), false],
    [() => RuntimeCommand.setState(BE, SRV, "maint"), false],
    [() => RuntimeCommand.addServer(BE, SRV, V4, PORT, { check: true }), false],
    [() => RuntimeCommand.deleteServer(BE, SRV), false],
    [() => RuntimeCommand.enableHealth(BE, SRV), false],
  ])("%#: %s", (build, isRead) => {
    const command = build();
    expect({ kind: command.kind, isRead: command.isRead }).toEqual({ kind: command.kind, isRead });
  });
});

describe("RuntimeCommand: the last-line guard refuses values that escaped validation", () => {
  // Branded values cast around the schemas, as a careless future caller might.
  const HOSTILE: [string, string][] = [
    ["';' (a second command)", "be;show info"],
    ["a newline (a second command)", "be\nshow info"],
    ["a carriage return", "be\rshow info"],
    ["a tab", "be\tx"],
    ["a double quote", 'be"x'],
    ["a single quote", "be'x"],
    ["a backslash (HAProxy's escape)", "be\\;x"],
    ["a NUL byte", "be\u0000x"],
    ["'#'", "be#x"],
    ["'%'", "fe80::1%eth0"],
    ["a non-ASCII character", "bé"],
    ["a Unicode line separator", "be\u2028x"],
  ];

  it.each(HOSTILE)("backend name with %s", (_label, value) => {
    const backend = value as Name;
    expect(() => RuntimeCommand.deleteServer(backend, SRV)).toThrow(UNSAFE);
    expect(() => RuntimeCommand.setState(backend, SRV, "ready")).toThrow(UNSAFE);
    expect(() => RuntimeCommand.enableHealth(backend, SRV)).toThrow(UNSAFE);
  });

  it.each(HOSTILE)("server name with %s", (_label, value) => {
    const server = value as Name;
    expect(() => RuntimeCommand.setWeight(BE, server, weightSchema.parse(1))).toThrow(UNSAFE);
    expect(() => RuntimeCommand.addServer(BE, server, V4, PORT, { check: false })).toThrow(
      UNSAFE,
    );
  });

  it.each(HOSTILE)("address with %s", (_label, value) => {
    const address = value as Address;
    expect(() => RuntimeCommand.setAddress(BE, SRV, address, PORT)).toThrow(UNSAFE);
  });

  it.each<[string, unknown]>([
    ["a string with ';'", "80;show info"],
    ["a string with a newline", "80\nshow info"],
    ["1e21 (printed with '+')", 1e21],
  ])("port: %s", (_label, value) => {
    const port = value as Port;
    expect(() => RuntimeCommand.setAddress(BE, SRV, V4, port)).toThrow(UNSAFE);
    expect(() => RuntimeCommand.addServer(BE, SRV, V4, port, { check: false })).toThrow(UNSAFE);
  });

  it.each([
    ["a string with ';'", "1;show info"],
    ["a string with a newline", "1\nshow info"],
  ])("weight: %s", (_label, value) => {
    const weight = value as unknown as Weight;
    expect(() => RuntimeCommand.setWeight(BE, SRV, weight)).toThrow(UNSAFE);
    expect(() => RuntimeCommand.addServer(BE, SRV, V4, PORT, { weight, check: false })).toThrow(
      UNSAFE,
    );
  });

  it.each([
    ["';'", "ready;show info"],
    ["a newline", "ready\nshow info"],
  ])("state with %s", (_label, value) => {
    expect(() => RuntimeCommand.setState(BE, SRV, value as AdminTarget)).toThrow(UNSAFE);
  });

  it("never returns a command: the error is thrown before anything is built", () => {
    let built: RuntimeCommand | undefined;
    expect(() => {
      built = RuntimeCommand.deleteServer("be;show info" as Name, SRV);
    }).toThrow(Error);
    expect(built).toBeUndefined();
  });

  // Spaces add arguments in HAProxy's CLI (an address of `127.0.0.9 port 4444` changes the
  // port too; on `add server` extra words become keywords), so each value is checked alone.
  it.each<[string, () => RuntimeCommand]>([
    ["address with extra words", () => RuntimeCommand.setAddress(BE, SRV, "127.0.0.9 port 4444" as Address, PORT)],
    ["server name with extra keywords on add server", () => RuntimeCommand.addServer(BE, "s 10.0.0.1:1 backup" as Name, V4, PORT, { check: false })],
    ["state with extra words", () => RuntimeCommand.setState(BE, SRV, "maint x" as AdminTarget)],
  ])("a space inside a value: %s", (_label, build) => {
    expect(build).toThrow(UNSAFE);
  });
});

describe("classifyReply", () => {
  const SET_ADDR = RuntimeCommand.setAddress(BE, SRV, V4, PORT);
  const SET_STATE = RuntimeCommand.setState(BE, SRV, "ready");
  const SET_WEIGHT = RuntimeCommand.setWeight(BE, SRV, weightSchema.parse(10));
  const ENABLE_HEALTH = RuntimeCommand.enableHealth(BE, SRV);
  const ADD = RuntimeCommand.addServer(BE, SRV, V4, PORT, { check: true });
  const DEL = RuntimeCommand.deleteServer(BE, SRV);

  // set addr texts as HAProxy prints them (also listed in haproxytech/client-native's runtime client).
  it.each<[string, RuntimeCommand, string]>([
    ["set addr: IP and port changed", SET_ADDR, "IP changed from '127.0.0.1' to '127.0.0.2', port changed from '80' to '8081' by 'stats socket command'"],
    ["set addr: only the IP changed", SET_ADDR, "IP changed from '127.0.0.3' to '127.0.0.4', no need to change the port by 'stats socket command'"],
    ["set addr: only the port changed", SET_ADDR, "no need to change the addr, port changed from '5851' to '80' by 'stats socket command'"],
    ["set addr: nothing to change", SET_ADDR, "no need to change the addr, no need to change the port by 'stats socket command'"],
    // 3.0+ (f1f4b93a6): a clause only for what changed, `nothing changed` when nothing did.
    ["set addr 3.0+: only the port changed", SET_ADDR, "port changed from '8002' to '8003' by 'stats socket command'"],
    ["set addr 3.0+: only the IP changed", SET_ADDR, "IP changed from '127.0.0.1' to '127.0.0.2' by 'stats socket command'"],
    ["set addr 3.0+: nothing changed", SET_ADDR, "nothing changed"],
    ["set addr: clauses in another order", SET_ADDR, "port changed from '1' to '2', IP changed from '127.0.0.1' to '127.0.0.2' by 'stats socket command'"],
    ["set addr: another requester", SET_ADDR, "IP changed from '::1' to '127.0.0.2', port changed from '80' to '81' by 'DNS cache'"],
    ["add server", ADD, "New server registered."],
    ["del server", DEL, "Server deleted."],
    ["set state (empty reply)", SET_STATE, ""],
    ["set weight (empty reply)", SET_WEIGHT, ""],
    ["enable health (empty reply)", ENABLE_HEALTH, ""],
    ["show servers state", RuntimeCommand.showServersState(), "1\n# be_id be_name srv_id"],
    ["show stat, even an empty reply", RuntimeCommand.showStat("backends"), ""],
    ["show info, even an error text (its parser judges)", RuntimeCommand.showInfo(), "Unknown command."],
    ["show backend", RuntimeCommand.showBackend(), "# name\nbe_app"],
  ])("ok: %s", (_label, command, text) => {
    const reply = classifyReply(command, text);
    expect(reply).toEqual({ command, ok: true, text });
    expect(reply.command).toBe(command);
  });

  it.each<[string, RuntimeCommand, string, FailureReason]>([
    ["set addr: invalid address", SET_ADDR, "Invalid addr 'x' by 'stats socket command'", "refused"],
    ["set addr: an empty reply is not a change", SET_ADDR, "", "refused"],
    ["set addr: no such server", SET_ADDR, "No such server.", "no-such-server"],
    ["set addr: no such backend", SET_ADDR, "No such backend.", "no-such-backend"],
    ["set addr: success text not at the start", SET_ADDR, "[4]: IP changed from '127.0.0.1' to '127.0.0.2'", "refused"],
    // 2.6 changes the address, then fails on the port, in one reply that starts like a success.
    ["set addr 2.6: IP changed but the port refused", SET_ADDR, "IP changed from '::1' to '127.0.0.3', problem converting port 'x' to an int by 'stats socket command'", "refused"],
    ["set addr 3.0+: port refused", SET_ADDR, "problem converting port 'x' to an int", "refused"],
    ["set addr 3.0+: invalid address, no requester", SET_ADDR, "Invalid addr 'x'", "refused"],
    ["set addr: a clause twice", SET_ADDR, "port changed from '1' to '2', port changed from '2' to '3' by 'stats socket command'", "refused"],
    ["set addr: a known clause then text", SET_ADDR, "IP changed from '127.0.0.1' to '127.0.0.2', and more by 'stats socket command'", "refused"],
    ["set addr: only a requester", SET_ADDR, " by 'stats socket command'", "refused"],
    ["set addr: nothing changed, then more", SET_ADDR, "nothing changed\nbut something else", "refused"],
    ["set addr: an unknown wording of success", SET_ADDR, "address updated", "refused"],
    ["add server: static balancing", ADD, "Backend must use a dynamic load balancing to support dynamic servers.", "dynamic-servers-refused"],
    // 3.4 (817003aa3).
    ["add server 3.4: static balancing", ADD, "Backend does not support dynamic servers : backend 'be_src' uses a non dynamic load balancing method.", "dynamic-servers-refused"],
    ["add server: dynamic servers mentioned, not by the backend", ADD, "Server 'x' cannot be used with dynamic servers.", "refused"],
    ["add server: no such backend", ADD, "No such backend.", "no-such-backend"],
    ["add server: backend not found (other wording)", ADD, "Can't find backend 'be_app'.", "no-such-backend"],
    ["add server: name in use", ADD, "Already exists a server with the same name in backend.", "refused"],
    ["add server: the success text with more after it", ADD, "New server registered.\nwarning", "refused"],
    ["add server: an empty reply", ADD, "", "refused"],
    ["del server: not in maintenance", DEL, "Only servers in maintenance mode can be deleted.", "refused"],
    ["del server: no such server", DEL, "No such server.", "no-such-server"],
    ["del server: an empty reply", DEL, "", "refused"],
    ["set state: any text at all", SET_STATE, "Require 'backend/server'.", "refused"],
    ["set state: no such server", SET_STATE, "No such server.", "no-such-server"],
    ["set state: a lone space is not empty", SET_STATE, " ", "refused"],
    ["set weight: out of range", SET_WEIGHT, "Absolute weight can only be between 0 and 256 inclusive.", "refused"],
    [
      "set weight: static balancing",
      SET_WEIGHT,
      "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.",
      "refused",
    ],
    ["enable health: checks not configured", ENABLE_HEALTH, "Health checks are not enabled on this server.", "refused"],
  ])("failed: %s", (_label, command, text, reason) => {
    const reply: CommandReply = classifyReply(command, text);
    expect(reply).toEqual({ command, ok: false, text, reason });
    expect(reply.command).toBe(command);
  });
});
