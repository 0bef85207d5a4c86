import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { InvalidInputError, UsageError } from "../../agent/errors.js";
import { certsCommand } from "../../controller/cli/certs-command.js";
import { silentLogger } from "../support/apply.js";

// `hafleet certs` for real, with the machine's openssl: what it writes, and that nothing runs
// (or is written) when a value is refused.

let dir: string;
let written: string[] = [];

async function certs(...args: string[]): Promise<number> {
  written = [];
  const write = vi.spyOn(process.stdout, "write").mockImplementation((text) => {
    written.push(String(text));
    return true;
  });
  try {
    return await certsCommand(args, silentLogger);
  } finally {
    write.mockRestore();
  }
}

async function certificate(name: string): Promise<X509Certificate> {
  return new X509Certificate(await readFile(join(dir, name)));
}

function extensions(name: string): string {
  return execFileSync("openssl", ["x509", "-in", join(dir, name), "-noout", "-ext", "basicConstraints,keyUsage,extendedKeyUsage,subjectAltName"], { encoding: "utf8" });
}

async function mode(name: string): Promise<number> {
  return (await stat(join(dir, name))).mode & 0o777;
}

/** What `certs` throws while openssl cannot be found: InvalidInputError proves it never ran. */
async function refusedBeforeOpenssl(...args: string[]): Promise<unknown> {
  const path = process.env.PATH;
  process.env.PATH = "";
  try {
    return await certs(...args).then(
      () => undefined,
      (error: unknown) => error,
    );
  } finally {
    process.env.PATH = path;
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "hafleet-certs-test-"));
  expect(await certs("init", "--dir", join(dir, "fleet"))).toBe(0);
  dir = join(dir, "fleet");
});

afterAll(async () => {
  await rm(join(dir, ".."), { recursive: true, force: true });
});

describe("hafleet certs", () => {
  it("init makes an EC P-256 CA for ten years, its key 0600, and prints both paths", async () => {
    const ca = await certificate("ca.crt");
    expect(ca.ca).toBe(true);
    expect(ca.subject).toBe("CN=hafleet fleet CA");
    expect(ca.publicKey.asymmetricKeyDetails).toEqual({ namedCurve: "prime256v1" });
    const years = (Date.parse(ca.validTo) - Date.parse(ca.validFrom)) / (365.25 * 86_400_000);
    expect(Math.round(years)).toBe(10);
    expect(extensions("ca.crt")).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0[\s\S]*Key Usage: critical\s+Certificate Sign, CRL Sign/);
    expect(await mode("ca.key")).toBe(0o600);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    expect(written.join("")).toBe(`${join(dir, "ca.key")}\n${join(dir, "ca.crt")}\n`);
  });

  it("issue --agent writes a client certificate naming the agent, signed by the CA", async () => {
    expect(await certs("issue", "--dir", dir, "--agent", "edge-1", "--days", "30")).toBe(0);
    const cert = await certificate("agent-edge-1.crt");
    const ca = await certificate("ca.crt");
    expect(cert.subject).toBe("CN=edge-1");
    expect(cert.subjectAltName).toBe("URI:hafleet://agent/edge-1");
    expect(cert.ca).toBe(false);
    expect(cert.checkIssued(ca) && cert.verify(ca.publicKey)).toBe(true);
    expect(cert.publicKey.asymmetricKeyDetails).toEqual({ namedCurve: "prime256v1" });
    expect(extensions("agent-edge-1.crt")).toMatch(/Key Usage: critical\s+Digital Signature[\s\S]*Extended Key Usage:\s+TLS Web Client Authentication/);
    // Valid from an hour ago, for 30 days from now.
    expect(Date.parse(cert.validFrom)).toBeLessThan(Date.now() - 3_000_000);
    expect(Math.round((Date.parse(cert.validTo) - Date.now()) / 86_400_000)).toBe(30);
    expect(await mode("agent-edge-1.key")).toBe(0o600);
  });

  it("issue --controller writes a server certificate with the DNS and IP SANs", async () => {
    expect(await certs("issue", "--dir", dir, "--controller", "ctl-1", "--dns", "ctl-1.example", "--ip", "127.0.0.1", "--ip", "::1")).toBe(0);
    const cert = await certificate("controller-ctl-1.crt");
    expect(cert.subjectAltName).toBe("DNS:ctl-1.example, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1");
    expect(cert.checkHost("ctl-1.example")).toBe("ctl-1.example");
    expect(cert.checkIP("127.0.0.1")).toBe("127.0.0.1");
    expect(extensions("controller-ctl-1.crt")).toMatch(/Extended Key Usage:\s+TLS Web Server Authentication/);
    expect(Math.round((Date.parse(cert.validTo) - Date.now()) / 86_400_000)).toBe(365);
  });

  it("refuses bad values before openssl runs, and writes nothing", async () => {
    const before = await readdir(dir);
    const refusals = [
      ["issue", "--dir", dir, "--agent", "edge 1"],
      ["issue", "--dir", dir, "--agent", "../ca"],
      ["issue", "--dir", dir, "--controller", "ctl\n[x]", "--dns", "a"],
      ["issue", "--dir", dir, "--controller", "ctl-2", "--dns", "a.example\nIP.9 = 10.0.0.1"],
      ["issue", "--dir", dir, "--controller", "ctl-2", "--ip", "10.0.0.1; rm"],
      ["issue", "--dir", dir, "--controller", "ctl-2"],
      ["issue", "--dir", dir, "--agent", "edge-2", "--days", "0"],
      ["issue", "--dir", dir, "--agent", "edge-2", "--days", "1e3"],
      ["issue", "--dir", dir, "--agent", "edge-1"],
      ["init", "--dir", dir],
      ["issue", "--dir", join(dir, "nowhere"), "--agent", "edge-2"],
    ];
    for (const args of refusals) expect(await refusedBeforeOpenssl(...args), args.join(" ")).toBeInstanceOf(InvalidInputError);
    for (const args of [["issue", "--dir", dir, "--agent", "a", "--dns", "x"], ["issue", "--dir", dir], ["issue", "--agent", "a"], ["renew"]]) {
      expect(await refusedBeforeOpenssl(...args), args.join(" ")).toBeInstanceOf(UsageError);
    }
    expect(await readdir(dir)).toEqual(before);
    expect(String(await refusedBeforeOpenssl("init", "--dir", dir))).toMatch(/ca\.crt already exists/);
  });

  it("says so when openssl fails, and leaves no half-written pair", async () => {
    const path = process.env.PATH;
    process.env.PATH = "";
    try {
      await expect(certs("issue", "--dir", dir, "--agent", "edge-3")).rejects.toThrow(/openssl genpkey failed: openssl is not installed/);
    } finally {
      process.env.PATH = path;
    }
    expect((await readdir(dir)).filter((name) => name.includes("edge-3"))).toEqual([]);
  });
});
