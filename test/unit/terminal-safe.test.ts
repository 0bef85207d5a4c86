import { describe, expect, it } from "vitest";
import { terminalSafe, terminalSafeJson, terminalSafeLines } from "../../agent/cli/terminal-safe.js";

describe("terminal-safe text", () => {
  it("escapes what would clear the screen, set the title or move the cursor", () => {
    expect(terminalSafe("be_app\u001b[2J\u001b]0;owned\u0007")).toBe("be_app\\x1b[2J\\x1b]0;owned\\x07");
    expect(terminalSafe("a\u009b31mb")).toBe("a\\x9b31mb");
    expect(terminalSafe("x\u007fy")).toBe("x\\x7fy");
  });

  it("keeps a forged row on its line: newlines, returns and tabs escaped", () => {
    expect(terminalSafe("srv1\nFAKE-ROW in-sync\r")).toBe("srv1\\nFAKE-ROW in-sync\\r");
    expect(terminalSafe("a\tb")).toBe("a\\tb");
  });

  it("escapes bidirectional overrides and Unicode line separators", () => {
    expect(terminalSafe("name\u202egnp.exe\u2028")).toBe("name\\u202egnp.exe\\u2028");
  });

  it("leaves ordinary text, IPv6 addresses and non-ASCII letters alone", () => {
    for (const text of ["be_web/srv1 [2001:db8::1]:80 UP", "Zürich ✓", ""]) expect(terminalSafe(text)).toBe(text);
  });

  it("keeps line breaks of multi-line output, escaping within each line", () => {
    expect(terminalSafeLines("line 1\u001b[H\nline 2")).toBe("line 1\\x1b[H\nline 2");
  });

  it("keeps JSON valid and equal while escaping what JSON.stringify leaves raw", () => {
    const value = { reply: "ok\u009b2J\u2028\u001b" };
    const json = terminalSafeJson(JSON.stringify(value));
    expect(json).not.toMatch(/[\u001b\u009b\u2028]/);
    expect(JSON.parse(json)).toEqual(value);
  });
});

describe("hafleet-agent show's table", () => {
  it("shows what HAProxy replied with its control characters escaped: no forged row, no escape sequence", async () => {
    const { formatObserved } = await import("../../agent/cli/format.js");
    const server = {
      rawName: "srv1\nFAKE-ROW",
      name: null,
      id: 1,
      rawAddress: "10.0.0.1",
      address: null,
      port: null,
      admin: "ready" as const,
      adminBits: 0,
      userWeight: 1,
      initialWeight: 1,
      checked: false,
      dynamic: false,
      status: "UP\u001b]0;owned\u0007",
      sessions: null,
    };
    const text = formatObserved("/run/haproxy/admin.sock", new Map([["be\u009b2J", { rawName: "be\u009b2J", name: null, algorithm: null, servers: [server] }]]));
    expect(text).not.toMatch(/[\u001b\u0007\u009b]/);
    expect(text.split("\n")).toHaveLength(3);
    expect(text).toContain("be\\x9b2J  srv1\\nFAKE-ROW  10.0.0.1:-");
    expect(text).toContain("UP\\x1b]0;owned\\x07");
  });
});
