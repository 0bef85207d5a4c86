import { describe, expect, it } from "vitest";
import { InvalidInputError, type InputIssue } from "../../agent/errors.js";
import { parseDesiredState, parseDesiredStateJson, type DesiredState } from "../../agent/model/desired-state.js";
import { caught, expectInvalid as expectInvalidFrom } from "../support/helpers.js";

const SOURCE = "desired.json";

function expectInvalid(run: () => DesiredState, issues: InputIssue[]): InvalidInputError {
  return expectInvalidFrom(run, issues, SOURCE);
}


/** A document with one backend `be` holding `servers`. */
function withServers(...servers: unknown[]): unknown {
  return { backends: [{ name: "be", servers }] };
}

function withServer(fields: Record<string, unknown>): unknown {
  return withServers({ address: "10.0.0.1", port: 8080, ...fields });
}

describe("parseDesiredState: valid documents", () => {
  it("parses a full document into exactly the same values", () => {
    const input = {
      version: "2024-06-01T12:00:00Z#17",
      backends: [
        {
          name: "be_app",
          servers: [
            { address: "10.0.0.1", port: 8080, weight: 10 },
            { address: "10.0.0.2", port: 8081 },
          ],
        },
        { name: "be.static-v2", servers: [] },
      ],
    };
    expect(parseDesiredState(input, SOURCE)).toEqual(input);
  });

  it("leaves weight absent when it is not given (not defaulted)", () => {
    const state = parseDesiredState(withServer({}), SOURCE);
    expect(state.backends[0]?.servers[0]).toEqual({ address: "10.0.0.1", port: 8080 });
    expect(Object.keys(state.backends[0]?.servers[0] ?? {})).toEqual(["address", "port"]);
  });

  it("leaves version absent when it is not given", () => {
    const state = parseDesiredState({ backends: [] }, SOURCE);
    expect(state).toEqual({ backends: [] });
    expect("version" in state).toBe(false);
  });

  it.each([
    ["2001:DB8:0::1", "2001:db8::1"],
    ["2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
    ["::1", "::1"],
    ["FE80::0:1", "fe80::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    // IPv4-mapped: the IPv4 host it maps, as hafleet sends it (HAProxy prints the form it is given).
    ["::ffff:10.0.0.1", "10.0.0.1"],
    ["::FFFF:0a00:0001", "10.0.0.1"],
    ["10.0.0.1", "10.0.0.1"],
  ])("canonicalises address %j to %j (the inet_ntop form HAProxy prints)", (address, canonical) => {
    const state = parseDesiredState(withServer({ address }), SOURCE);
    expect(state.backends[0]?.servers[0]?.address).toBe(canonical);
  });

  it.each([
    ["port", 1],
    ["port", 65535],
    ["weight", 0],
    ["weight", 256],
  ])("accepts the boundary value %s = %j", (field, value) => {
    const state = parseDesiredState(withServer({ [field]: value }), SOURCE);
    expect(state.backends[0]?.servers[0]?.[field as "port" | "weight"]).toBe(value);
  });

  it("accepts a 64-character backend name and a 128-character version", () => {
    const name = "b".repeat(64);
    const version = "v".repeat(128);
    expect(parseDesiredState({ version, backends: [{ name, servers: [] }] }, SOURCE)).toEqual({
      version,
      backends: [{ name, servers: [] }],
    });
  });

  it("accepts the same address on two ports and the same address:port in two backends", () => {
    const input = {
      backends: [
        { name: "a", servers: [{ address: "10.0.0.1", port: 80 }, { address: "10.0.0.1", port: 81 }] },
        { name: "b", servers: [{ address: "10.0.0.1", port: 80 }] },
      ],
    };
    expect(parseDesiredState(input, SOURCE)).toEqual(input);
  });
});

describe("parseDesiredStateJson", () => {
  it("parses JSON text", () => {
    const text = '{"version":"7","backends":[{"name":"be","servers":[{"address":"2001:DB8::1","port":443,"weight":3}]}]}';
    expect(parseDesiredStateJson(text, SOURCE)).toEqual({
      version: "7",
      backends: [{ name: "be", servers: [{ address: "2001:db8::1", port: 443, weight: 3 }] }],
    });
  });

  it("takes the JSON number 1e3 as the integer 1000", () => {
    const text = '{"backends":[{"name":"be","servers":[{"address":"10.0.0.1","port":1e3}]}]}';
    expect(parseDesiredStateJson(text, SOURCE).backends[0]?.servers[0]?.port).toBe(1000);
  });

  it("refuses text that is not JSON, naming the source", () => {
    const error = expectInvalid(
      () => parseDesiredStateJson("{backends: nope", SOURCE),
      [{ path: "", message: expect.stringMatching(/^not valid JSON: /) as unknown as string }],
    );
    expect(error.message).toMatch(/^desired\.json: not valid JSON: /);
  });

  it("refuses an empty file", () => {
    expectInvalid(
      () => parseDesiredStateJson("", SOURCE),
      [{ path: "", message: expect.stringMatching(/^not valid JSON: /) as unknown as string }],
    );
  });

  it.each([
    ["[]", [], "array"],
    ["null", null, "null"],
    ['"backends"', "backends", "string"],
    ["42", 42, "number"],
  ])("refuses the JSON %s, which is not an object", (text, value, received) => {
    const message = `Invalid input: expected object, received ${received}`;
    const error = expectInvalid(() => parseDesiredStateJson(text, SOURCE), [{ path: "", message, value }]);
    expect(error.message).toBe(`${SOURCE}: ${message} (got ${text})`);
  });
});

describe("parseDesiredState: hostile values are refused, naming path and value", () => {
  const ADDRESS = "backends[0].servers[0].address";
  const PORT = "backends[0].servers[0].port";
  const WEIGHT = "backends[0].servers[0].weight";
  const LITERAL = "must be an IPv4 or IPv6 literal";
  const UNSPECIFIED = "must not be the unspecified address";
  const PORT_RANGE = "must be between 1 and 65535";
  const WEIGHT_RANGE = "must be between 0 and 256";

  it.each<[string, unknown, string, string]>([
    ["';' (a second command)", "10.0.0.1;show info", ADDRESS, LITERAL],
    ["a newline (a second command)", "10.0.0.1\nshow info", ADDRESS, LITERAL],
    ["CR LF", "10.0.0.1\r\nshow info", ADDRESS, LITERAL],
    ["spaces and extra words", "127.0.0.9 port 4444", ADDRESS, LITERAL],
    ["a leading space", " 10.0.0.1", ADDRESS, LITERAL],
    ["a trailing space", "10.0.0.1 ", ADDRESS, LITERAL],
    ["an octet above 255", "300.1.1.1", ADDRESS, LITERAL],
    ["three octets", "1.2.3", ADDRESS, LITERAL],
    ["a leading-zero octet", "010.0.0.1", ADDRESS, LITERAL],
    ["a hostname", "app.example.com", ADDRESS, LITERAL],
    ["an all-hex hostname", "cafe.bad", ADDRESS, LITERAL],
    ["an IPv6 zone id", "fe80::1%eth0", ADDRESS, LITERAL],
    ["brackets", "[::1]", ADDRESS, LITERAL],
    ["an address with a port", "10.0.0.1:80", ADDRESS, LITERAL],
    ["an empty string", "", ADDRESS, LITERAL],
    ["0.0.0.0 (unspecified)", "0.0.0.0", ADDRESS, UNSPECIFIED],
    [":: (unspecified)", "::", ADDRESS, UNSPECIFIED],
    ["the unspecified IPv6 address written long", "0:0:0:0:0:0:0:0", ADDRESS, UNSPECIFIED],
    ["a number", 167772161, ADDRESS, "Invalid input: expected string, received number"],
    ["null", null, ADDRESS, "Invalid input: expected string, received null"],
  ])("address: %s", (_label, address, path, message) => {
    const error = expectInvalid(() => parseDesiredState(withServer({ address }), SOURCE), [{ path, message, value: address }]);
    expect(error.message).toBe(`${SOURCE}: ${path}: ${message} (got ${JSON.stringify(address)})`);
  });

  it.each<[string, unknown, string, string]>([
    ["0", 0, PORT, PORT_RANGE],
    ["65536 (HAProxy would wrap it to 0)", 65536, PORT, PORT_RANGE],
    ["99999 (HAProxy would wrap it to 34463)", 99999, PORT, PORT_RANGE],
    ["-1", -1, PORT, PORT_RANGE],
    ["80.5", 80.5, PORT, "must be an integer"],
    ['the string "1e3" (HAProxy would read 1)', "1e3", PORT, "must be a number"],
    ['the string "80"', "80", PORT, "must be a number"],
    ["null", null, PORT, "must be a number"],
    ["true", true, PORT, "must be a number"],
  ])("port: %s", (_label, port, path, message) => {
    const error = expectInvalid(() => parseDesiredState(withServer({ port }), SOURCE), [{ path, message, value: port }]);
    expect(error.message).toBe(`${SOURCE}: ${path}: ${message} (got ${JSON.stringify(port)})`);
  });

  it.each<[string, unknown, string, string]>([
    ["257", 257, WEIGHT, WEIGHT_RANGE],
    ["-1", -1, WEIGHT, WEIGHT_RANGE],
    ["1.5", 1.5, WEIGHT, "must be an integer"],
    ['the string "10"', "10", WEIGHT, "must be a number"],
    ["null", null, WEIGHT, "must be a number"],
  ])("weight: %s", (_label, weight, path, message) => {
    const error = expectInvalid(() => parseDesiredState(withServer({ weight }), SOURCE), [{ path, message, value: weight }]);
    expect(error.message).toBe(`${SOURCE}: ${path}: ${message} (got ${JSON.stringify(weight)})`);
  });

  const NAME_CHARS = "may contain only letters, digits, '.', '_' and '-'";
  it.each<[string, unknown, string[]]>([
    ["a space", "be app", [NAME_CHARS]],
    ["a double quote", 'be"app', [NAME_CHARS]],
    ["a single quote", "be'app", [NAME_CHARS]],
    ["a backslash", "be\\app", [NAME_CHARS]],
    ["';'", "be;show info", [NAME_CHARS]],
    ["'/'", "be/srv", [NAME_CHARS]],
    ["a newline", "be\nshow info", [NAME_CHARS]],
    ["a tab", "be\tapp", [NAME_CHARS]],
    ["a non-ASCII letter", "bé", [NAME_CHARS]],
    ["65 characters", "b".repeat(65), ["must be at most 64 characters"]],
    ["an empty string", "", ["must not be empty", NAME_CHARS]],
    ["a number", 7, ["Invalid input: expected string, received number"]],
  ])("backend name: %s", (_label, name, messages) => {
    const path = "backends[0].name";
    const error = expectInvalid(
      () => parseDesiredState({ backends: [{ name, servers: [] }] }, SOURCE),
      messages.map((message) => ({ path, message, value: name })),
    );
    expect(error.message).toContain(`${path}: ${messages[0]} (got ${JSON.stringify(name)})`);
  });

  it("version: longer than 128 characters", () => {
    const version = "v".repeat(129);
    expectInvalid(() => parseDesiredState({ version, backends: [] }, SOURCE), [
      { path: "version", message: "must be at most 128 characters", value: version },
    ]);
  });

  it("version: a number", () => {
    expectInvalid(() => parseDesiredState({ version: 3, backends: [] }, SOURCE), [
      { path: "version", message: "Invalid input: expected string, received number", value: 3 },
    ]);
  });

  it.each<[string, unknown, string, string]>([
    ["top level", { backends: [], backend: [] }, "", "unknown field(s) backend"],
    ["top level, two fields", { backends: [], extra: 1, other: 2 }, "", "unknown field(s) extra, other"],
    ["backend", { backends: [{ name: "be", servers: [], balance: "roundrobin" }] }, "backends[0]", "unknown field(s) balance"],
    ["server", withServer({ check: true }), "backends[0].servers[0]", "unknown field(s) check"],
    ["server (a misspelt field)", withServer({ wieght: 10 }), "backends[0].servers[0]", "unknown field(s) wieght"],
  ])("unknown field at %s", (_label, input, path, message) => {
    const error = expectInvalid(() => parseDesiredState(input, SOURCE), [{ path, message }]);
    expect(error.message).toBe(path === "" ? `${SOURCE}: ${message}` : `${SOURCE}: ${path}: ${message}`);
  });

  it.each<[string, unknown, string]>([
    ["backends", {}, "backends"],
    ["servers", { backends: [{ name: "be" }] }, "backends[0].servers"],
    ["name", { backends: [{ servers: [] }] }, "backends[0].name"],
    ["address", withServers({ port: 80 }), "backends[0].servers[0].address"],
  ])("missing %s", (_label, input, path) => {
    const issues = (caught(() => parseDesiredState(input, SOURCE)) as InvalidInputError).issues;
    expect(issues).toHaveLength(1);
    expect(issues[0]?.path).toBe(path);
    expect(issues[0]?.message).toMatch(/^Invalid input: expected \w+, received undefined$/);
    expect(issues[0] && "value" in issues[0]).toBe(false);
  });

  it("missing port", () => {
    expectInvalid(() => parseDesiredState(withServers({ address: "10.0.0.1" }), SOURCE), [
      { path: "backends[0].servers[0].port", message: "must be a number" },
    ]);
  });

  it("a server listed twice in a backend", () => {
    const duplicate = { address: "10.0.0.1", port: 80 };
    const error = expectInvalid(
      () => parseDesiredState(withServers({ address: "10.0.0.2", port: 80 }, duplicate, { ...duplicate }), SOURCE),
      [{ path: "backends[0].servers[2]", message: "duplicates servers[1] (10.0.0.1:80)", value: duplicate }],
    );
    expect(error.message).toBe(
      `${SOURCE}: backends[0].servers[2]: duplicates servers[1] (10.0.0.1:80) (got {"address":"10.0.0.1","port":80})`,
    );
  });

  it("the same IPv6 server written two ways, compared after canonicalisation", () => {
    const second = { address: "2001:db8:0:0::1", port: 443 };
    expectInvalid(() => parseDesiredState(withServers({ address: "2001:DB8::1", port: 443, weight: 1 }, second), SOURCE), [
      { path: "backends[0].servers[1]", message: "duplicates servers[0] ([2001:db8::1]:443)", value: second },
    ]);
  });

  it("the same backend listed twice", () => {
    const error = expectInvalid(
      () =>
        parseDesiredState(
          {
            backends: [
              { name: "be", servers: [] },
              { name: "other", servers: [] },
              { name: "be", servers: [{ address: "10.0.0.1", port: 80 }] },
            ],
          },
          SOURCE,
        ),
      [{ path: "backends[2].name", message: "backend listed twice", value: "be" }],
    );
    expect(error.message).toBe(`${SOURCE}: backends[2].name: backend listed twice (got "be")`);
  });
});

describe("parseDesiredState: several errors at once", () => {
  it("reports every bad field across servers and backends, in document order", () => {
    const input = {
      version: "v1",
      backends: [
        {
          name: "be;show info",
          servers: [
            { address: "10.0.0.1;show info", port: 80 },
            { address: "10.0.0.2", port: 99999, weight: 257 },
            { address: "10.0.0.3", port: 80, extra: true },
          ],
        },
        { name: "ok", servers: [{ address: "::", port: "80" }] },
      ],
      comment: "x",
    };
    const error = expectInvalid(() => parseDesiredState(input, SOURCE), [
      { path: "backends[0].name", message: "may contain only letters, digits, '.', '_' and '-'", value: "be;show info" },
      { path: "backends[0].servers[0].address", message: "must be an IPv4 or IPv6 literal", value: "10.0.0.1;show info" },
      { path: "backends[0].servers[1].port", message: "must be between 1 and 65535", value: 99999 },
      { path: "backends[0].servers[1].weight", message: "must be between 0 and 256", value: 257 },
      { path: "backends[0].servers[2]", message: "unknown field(s) extra" },
      { path: "backends[1].servers[0].address", message: "must not be the unspecified address", value: "::" },
      { path: "backends[1].servers[0].port", message: "must be a number", value: "80" },
      { path: "", message: "unknown field(s) comment" },
    ]);
    expect(error.message).toBe(
      [
        `${SOURCE}: backends[0].name: may contain only letters, digits, '.', '_' and '-' (got "be;show info")`,
        `backends[0].servers[0].address: must be an IPv4 or IPv6 literal (got "10.0.0.1;show info")`,
        "backends[0].servers[1].port: must be between 1 and 65535 (got 99999)",
        "backends[0].servers[1].weight: must be between 0 and 256 (got 257)",
        "backends[0].servers[2]: unknown field(s) extra",
        `backends[1].servers[0].address: must not be the unspecified address (got "::")`,
        `backends[1].servers[0].port: must be a number (got "80")`,
        "unknown field(s) comment",
      ].join("; "),
    );
  });

  it("reports a duplicate server together with a range error in the same backend", () => {
    expectInvalid(
      () => parseDesiredState(withServers({ address: "10.0.0.1", port: 80 }, { address: "10.0.0.1", port: 80 }, { address: "10.0.0.2", port: 0 }), SOURCE),
      [
        { path: "backends[0].servers[2].port", message: "must be between 1 and 65535", value: 0 },
        { path: "backends[0].servers[1]", message: "duplicates servers[0] (10.0.0.1:80)", value: { address: "10.0.0.1", port: 80 } },
      ],
    );
  });

  it("reports a duplicate backend together with a bad address elsewhere", () => {
    expectInvalid(
      () =>
        parseDesiredState(
          { backends: [{ name: "be", servers: [] }, { name: "be", servers: [{ address: "1.2.3", port: 80 }] }] },
          SOURCE,
        ),
      [
        { path: "backends[1].servers[0].address", message: "must be an IPv4 or IPv6 literal", value: "1.2.3" },
        { path: "backends[1].name", message: "backend listed twice", value: "be" },
      ],
    );
  });
});
