import { describe, expect, it } from "vitest";
import { InvalidInputError } from "../../agent/errors.js";
import { helloSchema, observedReportSchema, parseMessage } from "../../proto/messages.js";

// Whatever came from outside is echoed as a bounded prefix with its size: a 1 MB name in a
// hello must not become a 1 MB log line, nor a gRPC status too big to reach the client.

describe("echoing bad input", () => {
  it("cuts a long value to a prefix that says how long it was, in the message and in the issues", () => {
    const name = "x".repeat(1_000_000);
    const error = new InvalidInputError("hello", [{ path: "sockets[0].backends[0].name", message: "too long", value: name }]);
    expect(error.message.length).toBeLessThan(600);
    expect(error.message).toContain("… (1000000 characters)");
    expect(JSON.stringify(error.issues).length).toBeLessThan(600);
    expect(error.issues[0]).toMatchObject({ value: "x".repeat(256), size: 1_000_000 });
  });

  it("spells out at most ten issues and counts the rest", () => {
    const issues = Array.from({ length: 5_000 }, (_, i) => ({ path: `servers[${i}].port`, message: "must be 1..65535", value: 0 }));
    const error = new InvalidInputError("push", issues);
    expect(error.message).toMatch(/; and 4990 more$/);
    expect(error.message.length).toBeLessThan(1_000);
  });

  it("keeps a short value exactly as it was", () => {
    expect(new InvalidInputError("f", [{ path: "port", message: "bad", value: 99999 }]).message).toBe("f: port: bad (got 99999)");
  });

  it("refuses a hello with a 1 MB backend name with an error of bounded size", () => {
    const hello = { agentId: "edge-1", labels: {}, hafleetVersion: "1", sockets: [{ socket: "/s", backends: [{ name: "b".repeat(1_000_000), slots: 1, serving: 0, dynamic: true }] }], appliedVersions: {} };
    let caught: unknown;
    try {
      parseMessage(helloSchema, hello, "hello");
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(InvalidInputError);
    expect((caught as Error).message.length).toBeLessThan(600);
    expect(JSON.stringify((caught as InvalidInputError).issues).length).toBeLessThan(600);
  });
});

describe("text an agent reports, before it can reach a terminal", () => {
  const report = (endpoint: string) => ({ digest: "d", appliedVersions: {}, backends: [{ backend: "be_app", socket: "/s", digest: "x", serving: 1, drift: [{ endpoint, state: "missing" }] }] });

  it("takes drift endpoints as ADDR:PORT only: no escape sequence, newline or space", () => {
    for (const endpoint of ["10.0.0.1:80", "[2001:db8::1]:443", "web.internal:8080", "0.0.0.0:-"]) expect(observedReportSchema.safeParse(report(endpoint)).success, endpoint).toBe(true);
    for (const endpoint of ["\u001b[2J\u001b]0;pwned\u0007:80", "10.0.0.1:80\nFAKE-ROW in-sync", "10.0.0.1 80", "10.0.0.1"]) expect(observedReportSchema.safeParse(report(endpoint)).success, JSON.stringify(endpoint)).toBe(false);
  });
});
