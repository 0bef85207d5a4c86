import { describe, expect, it } from "vitest";
import { parseDuration } from "../../agent/cli/args.js";
import type { InputIssue } from "../../agent/errors.js";
import { formatSocketAddress, parseSocketAddress, type SocketAddress } from "../../agent/runtime/socket-address.js";
import { caught, expectInvalid as expectInvalidFrom } from "../support/helpers.js";

/** Argument order of this file's tables: where the error comes from, then what it says. */
function expectInvalid(run: () => unknown, source: string, issues: InputIssue[]): void {
  expectInvalidFrom(run, issues, source);
}

describe("parseSocketAddress", () => {
  it.each<[string, SocketAddress]>([
    ["/run/haproxy/admin.sock", { kind: "unix", path: "/run/haproxy/admin.sock" }],
    ["./admin.sock", { kind: "unix", path: "./admin.sock" }],
    ["/tmp/dir with space/haproxy.sock", { kind: "unix", path: "/tmp/dir with space/haproxy.sock" }],
    ["127.0.0.1:9999", { kind: "tcp", host: "127.0.0.1", port: 9999 }],
    ["[::1]:9999", { kind: "tcp", host: "::1", port: 9999 }],
    ["[2001:db8::1]:443", { kind: "tcp", host: "2001:db8::1", port: 443 }],
    ["localhost:9999", { kind: "tcp", host: "localhost", port: 9999 }],
    ["lb-1.example.com:1", { kind: "tcp", host: "lb-1.example.com", port: 1 }],
    ["localhost:65535", { kind: "tcp", host: "localhost", port: 65535 }],
  ])("parses %j", (text, expected) => {
    expect(parseSocketAddress(text)).toEqual(expected);
  });

  it.each([
    ["port 0", "host:0"],
    ["port 65536", "host:65536"],
    ["port 99999", "host:99999"],
    ["a six-digit port", "host:100000"],
    ["no port", "host"],
    ["an empty port", "host:"],
    ["no host", ":9999"],
    ["a non-IPv6 inside brackets", "[zz]:80"],
    ["IPv4 inside brackets", "[127.0.0.1]:80"],
    ["invalid IPv6 inside brackets", "[1:::2]:80"],
    ["IPv6 without brackets", "::1:9999"],
    ["a space in the host", "a b:80"],
    ["an underscore in the host", "my_host:80"],
    ["a signed port", "host:+80"],
    ["a negative port", "host:-1"],
    ["a trailing space", "host:80 "],
    ["a newline", "host:80\n"],
    ["an empty string", ""],
  ])("refuses %s (%j)", (_label, text) => {
    expectInvalid(() => parseSocketAddress(text), "--socket", [
      { path: "socket", message: "must be a unix socket path or HOST:PORT with a port in 1..65535", value: text },
    ]);
  });

  it("names the flag and the value in the message", () => {
    expect((caught(() => parseSocketAddress("host:0")) as Error).message).toBe(
      '--socket: socket: must be a unix socket path or HOST:PORT with a port in 1..65535 (got "host:0")',
    );
  });
});

describe("formatSocketAddress", () => {
  it.each<[SocketAddress, string]>([
    [{ kind: "unix", path: "/run/haproxy/admin.sock" }, "/run/haproxy/admin.sock"],
    [{ kind: "tcp", host: "127.0.0.1", port: 9999 }, "127.0.0.1:9999"],
    [{ kind: "tcp", host: "localhost", port: 80 }, "localhost:80"],
    [{ kind: "tcp", host: "::1", port: 9999 }, "[::1]:9999"],
  ])("formats %j as %j", (address, text) => {
    expect(formatSocketAddress(address)).toBe(text);
  });

  it.each(["/run/haproxy/admin.sock", "./admin.sock", "127.0.0.1:9999", "[::1]:9999", "[2001:db8::1]:443", "localhost:9999", "lb-1.example.com:65535"])(
    "round-trips %j",
    (text) => {
      const parsed = parseSocketAddress(text);
      expect(formatSocketAddress(parsed)).toBe(text);
      expect(parseSocketAddress(formatSocketAddress(parsed))).toEqual(parsed);
    },
  );
});

describe("parseDuration", () => {
  it.each([
    ["500ms", 500],
    ["5s", 5_000],
    ["2m", 120_000],
    ["250", 250],
    ["1ms", 1],
    ["90s", 90_000],
    ["007s", 7_000],
  ])("reads %j as %i ms", (text, ms) => {
    expect(parseDuration("--timeout", text)).toBe(ms);
  });

  it.each([
    ["an unknown unit", "5h"],
    ["a negative value", "-1s"],
    ["a fraction", "1.5s"],
    ["an empty string", ""],
    ["a leading space", " 5s"],
    ["a trailing space", "5s "],
    ["a space before the unit", "5 s"],
    ["a unit alone", "ms"],
    ["an upper-case unit", "5S"],
    ["two units", "1m30s"],
    ["an exponent", "1e3"],
    ["a trailing newline", "5s\n"],
  ])("refuses %s (%j), naming the flag and the value", (_label, text) => {
    expectInvalid(() => parseDuration("--timeout", text), "--timeout", [
      { path: "--timeout", message: "must be a duration like 500ms, 5s or 2m", value: text },
    ]);
  });

  it("names the flag it was given in the message", () => {
    expect((caught(() => parseDuration("--interval", "5h")) as Error).message).toBe(
      '--interval: --interval: must be a duration like 500ms, 5s or 2m (got "5h")',
    );
  });
});
